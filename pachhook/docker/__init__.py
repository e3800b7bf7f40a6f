"""Docker: Dockerfile parsing, ignore rules, image inputs and their digest, build contexts, the engine, the registry and its credentials."""
