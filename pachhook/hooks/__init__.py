"""Git hooks: installing the scripts, the pre-push policy, deploys after the push, the post-commit view."""
