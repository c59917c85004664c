"""The body of scripts/bench-restore: seed, restore with s3-failback, restore with boto3, report.

Arguments: ENDPOINT N BINARY WORKDIR. The local S3 server is already running at ENDPOINT.
Both runs start from the same replica into their own empty versioned primary with
BucketOwnerEnforced ownership (one CopyObject per object). Each run's wall time includes
its listing of the replica; s3-failback also lists the (empty) primary and writes its
state and reports.
"""
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

endpoint, n, binary, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
POOL = 64


def client(region):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=POOL),
    )


replica_s3, primary_s3 = client("eu-west-1"), client("us-east-1")
stamp = str(int(time.time()))
replica = f"bench-replica-{stamp}"
primaries = [f"bench-primary-tool-{stamp}", f"bench-primary-boto3-{stamp}"]

replica_s3.create_bucket(Bucket=replica, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
replica_s3.put_bucket_versioning(Bucket=replica, VersioningConfiguration={"Status": "Enabled"})
for name in primaries:
    primary_s3.create_bucket(Bucket=name, ObjectOwnership="BucketOwnerEnforced")
    primary_s3.put_bucket_ownership_controls(
        Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    )
    primary_s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

keys = [f"data/{i:06d}.bin" for i in range(n)]
started = time.perf_counter()
with ThreadPoolExecutor(32) as pool:
    list(pool.map(lambda k: replica_s3.put_object(Bucket=replica, Key=k, Body=os.urandom(256)), keys))
print(f"seeded {n} objects of 256 bytes in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def count_versions(bucket):
    pages = primary_s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
    return sum(len(p.get("Versions", [])) for p in pages)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# s3-failback, as an operator runs it.
args = [
    binary, "restore", "--yes", "--quiet",
    "--source", f"s3://{replica}", "--dest", f"s3://{primaries[0]}",
    "--source-region", "eu-west-1", "--dest-region", "us-east-1",
    "--endpoint-url", endpoint, "--path-style", "--concurrency", str(POOL),
    "--state-dir", os.path.join(work, "state"), "--report-dir", os.path.join(work, "reports"),
]
cpu0, t0 = children_cpu(), time.perf_counter()
done = subprocess.run(args, capture_output=True, text=True)
tool_wall, tool_cpu = time.perf_counter() - t0, children_cpu() - cpu0
if done.returncode != 0:
    sys.exit(f"s3-failback exited {done.returncode}:\n{done.stderr}")
with open(os.path.join(work, "reports", "summary.json")) as f:
    summary = json.load(f)
assert summary["counts"]["done"] == n, summary["counts"]

# The baseline: list the replica, then the same CopyObject calls (storage class and SSE as
# the tool sends them into a bucket that reports no default encryption) from 64 threads.
copier = client("us-east-1")
cpu0, t0 = time.process_time(), time.perf_counter()
versions = [
    (v["Key"], v["VersionId"])
    for page in replica_s3.get_paginator("list_object_versions").paginate(Bucket=replica)
    for v in page.get("Versions", [])
    if v["IsLatest"]
]


def copy(kv):
    key, version_id = kv
    copier.copy_object(
        Bucket=primaries[1], Key=key,
        CopySource={"Bucket": replica, "Key": key, "VersionId": version_id},
        StorageClass="STANDARD", ServerSideEncryption="AES256",
    )


with ThreadPoolExecutor(POOL) as pool:
    list(pool.map(copy, versions))
boto_wall, boto_cpu = time.perf_counter() - t0, time.process_time() - cpu0

for name in primaries:
    got = count_versions(name)
    assert got == n, f"{name} holds {got} versions, not {n}"

rows = [("s3-failback", tool_wall, tool_cpu), ("boto3 x64", boto_wall, boto_cpu)]
print(f"\nrestore of {n} objects on moto at {endpoint} (concurrency {POOL}; limit final {summary['concurrency']})")
print(f"{'client':<14}{'wall s':>9}{'objects/s':>12}{'CPU s':>9}{'CPU s/1k obj':>14}")
for name, wall, cpu in rows:
    print(f"{name:<14}{wall:>9.2f}{n / wall:>12.0f}{cpu:>9.2f}{cpu / n * 1000:>14.3f}")
print(
    f"s3-failback / boto3: {boto_wall / tool_wall:.2f}x the throughput, "
    f"{tool_cpu / boto_cpu:.2f}x the CPU per object"
)
