"""The running node: configuration, storage, the Paxos driver, peers, catch-up, metrics.

Deliberately empty: ``parakoon client`` and ``parakoon wal`` import ``runtime.config`` and must
not pull in anyio, the driver or the store on the way (see ``commands/cli.py``).
"""
