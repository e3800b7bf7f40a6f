"""Pachyderm: pipeline specs, where the cluster is and how to reach it, and the cluster itself."""
