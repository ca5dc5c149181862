"""How a pod's hosts split examples (pure index arithmetic; the collectives are exercised by
tests/test_multiprocess.py)."""

from scicot_jax.runtime import multihost


def test_hosts_split_each_job_shard_and_the_limit_like_one_host():
    examples = list(range(23))
    for jobs in (1, 3):
        for hosts in (1, 2, 4):
            for job in range(jobs):
                whole = examples[job::jobs]  # what one host of job shard `job` reads
                parts = []
                for h in range(hosts):
                    index, count = multihost.shard_info(h, hosts, job, jobs)
                    parts.append(examples[index::count])  # seqio.ShardInfo on one file
                    assert parts[-1] == whole[h::hosts]
                    n = multihost.local_limit(5, h, hosts)
                    assert parts[-1][:n] == [x for x in whole[:5] if x in parts[-1]]
                # gathering round-robin restores the job shard's order
                assert multihost.interleave(parts) == whole
    assert multihost.local_limit(None, 1, 2) is None
    assert [multihost.local_limit(1, h, 4) for h in range(4)] == [1, 0, 0, 0]


def test_one_process_gathers_without_collectives():
    assert multihost.gather_shards(["a", "b"], 0, 1) == ["a", "b"]
    assert multihost.allgather_objects({"x": 1}) == [{"x": 1}]
