"""Seeds the local demo: a versioned replica (eu-west-1) and a damaged primary (us-east-1).

Run by scripts/demo against the local S3 server; prints nothing but a one-line summary.
"""
import random
import sys
import time

import boto3

endpoint = sys.argv[1]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="demo",
    aws_secret_access_key="demo",
    region_name="us-east-1",
)


def bucket(name, region):
    cfg = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=name, **cfg)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


bucket("demo-replica", "eu-west-1")
bucket("demo-primary", "us-east-1")
rng = random.Random(7)
keys = [f"{p}/{i:04d}.json" for p in ("orders", "invoices", "users") for i in range(60)]
keys += ["reports/2026 Q3 summary.pdf", "reports/naïve café.txt", "reports/a+b=c.csv"]
written = 0
# Before the outage: the primary held older versions of some keys (they went stale).
stale = [key for key in keys if rng.random() < 0.15]
for key in stale:
    s3.put_object(Bucket="demo-primary", Key=key, Body=b"stale")
# Last-Modified has one-second resolution: the replica's versions must be newer.
time.sleep(1.1)
for key in keys:
    for v in range(rng.choice([1, 1, 2, 3])):
        body = f"{key} version {v} ".encode() * rng.randint(1, 40)
        s3.put_object(
            Bucket="demo-replica",
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata={"origin": "demo", "version": str(v)},
            Tagging="team=payments&tier=gold",
        )
        written += 1
    # The primary survived the outage with part of its data.
    if key not in stale and rng.random() < 0.3:
        s3.copy_object(Bucket="demo-primary", Key=key, CopySource={"Bucket": "demo-replica", "Key": key})
for key in keys[::25]:
    s3.delete_object(Bucket="demo-replica", Key=key)
print(f"seeded {len(keys)} keys ({written} versions) in s3://demo-replica and a damaged s3://demo-primary")
