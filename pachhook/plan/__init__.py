"""The pure planner, the loader that gathers what it needs, workspace discovery, explain and init's discovery."""
