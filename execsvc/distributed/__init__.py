"""Running a queue's jobs on other machines through RQ and Redis (docs/distributed.md).

The front machine keeps the file queue and its worker, started with ``--executor rq``: it
claims, orders and judges jobs as ever, then hands each claimed job to an RQ queue
(:mod:`.dispatch`) instead of starting it, and records it when its exit comes back. On each
execution machine ``execsvc remote-worker`` (:mod:`.cli`, an RQ ``SimpleWorker``) runs the job
function of :mod:`.remote`: the job is judged again by that machine's own config and run by
execsvc's runner (process group, timeout, limits, sandbox); its output goes to that machine's
``logs/`` and back in bounded chunks through Redis (:mod:`.shipping`). Key and queue names
are :mod:`.keys`'s.
"""
