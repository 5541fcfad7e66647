"""The Kafka runner: faust-streaming workers over per-partition engines.

``run_worker(WorkerSettings())`` runs one worker; ``ScoresReader`` materializes the merged
view of every partition for the HTTP API. See ``streams/worker/agents.py`` for the flow
and the guarantees.
"""
