"""Executing a plan: the executor, the runner that wires the real adapters, reports, progress, the lock and the ledger."""
