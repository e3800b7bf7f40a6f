"""The watcher: file events, what is ignored, settled change sets and the session that runs on them."""
