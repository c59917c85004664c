"""The body of scripts/bench: s3-failback restore side by side with the tools users would
pick instead, on the local S3 server, in one run. See README "Benchmarks".

scripts/bench builds the Rust programs, installs the peers and calls this with the paths.
Every client runs as a child process: wall time is the child's from start to exit, CPU
seconds and peak RSS come from wait4(2) of that child, and requests are the lines the
server logged while it ran (the server logs one line per request; the harness's own
checks run after the count is taken).
"""
import argparse
import csv
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

REQUEST_LINE = re.compile(rb'"(GET|PUT|POST|HEAD|DELETE) ')
MIB = 1024 * 1024


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_sizes(spec):
    """`1024` or `1024:0.8,65536:0.2` (bytes, with k/m suffixes, and weights)."""
    out = []
    for part in spec.split(","):
        size, _, weight = part.partition(":")
        size = size.strip().lower()
        mult = 1
        if size.endswith("k"):
            size, mult = size[:-1], 1024
        elif size.endswith("m"):
            size, mult = size[:-1], MIB
        out.append((int(size) * mult, float(weight or 1)))
    return out


class Server:
    """One local S3 server (moto) in a child process, with its request log."""

    def __init__(self, name, cmd_for_port, work, upstream_of=None):
        self.name = name
        self.port = free_port()
        self.log_path = os.path.join(work, f"{name}.log")
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd_for_port(self.port), stdout=self.log_file, stderr=subprocess.STDOUT)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        else:
            sys.exit(f"{name} did not start; see {self.log_path}")

    def requests_so_far(self):
        self.log_file.flush()
        with open(self.log_path, "rb") as f:
            return len(REQUEST_LINE.findall(f.read()))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class DelayProxy:
    def __init__(self, binary, upstream_port, delay_ms):
        self.proc = subprocess.Popen(
            [binary, f"127.0.0.1:{upstream_port}", "--delay-ms", str(delay_ms)],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline().split()
        self.endpoint = f"http://127.0.0.1:{line[1]}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def s3(endpoint, region="us-east-1", pool=64):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=pool,
                      retries={"max_attempts": 10, "mode": "standard"}),
    )


# ----------------------------------------------------------------------------- seeding

def make_bucket(client, name, ownership, region="us-east-1"):
    kw = {"Bucket": name}
    if region != "us-east-1":
        kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if ownership:
        kw["ObjectOwnership"] = ownership
    client.create_bucket(**kw)
    if ownership:
        client.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": ownership}]})
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def attrs_for(key):
    return dict(
        ContentType="application/x-bench" if hash(key) % 2 else "text/plain; charset=utf-8",
        Metadata={"origin": "bench", "key-hash": hashlib.sha1(key.encode()).hexdigest()[:12]},
        Tagging=f"bench=yes&idx={len(key)}",
    )


def seed_small(client, bucket, args, acl_grant=None):
    rng = random.Random(42)
    sizes = parse_sizes(args.sizes)
    keys = [f"p{i % args.prefixes:02d}/obj-{i:07d}.bin" for i in range(args.count_now)]
    jobs = [(k, v) for k in keys for v in range(args.versions)]
    sized = {k: rng.choices([s for s, _ in sizes], [w for _, w in sizes])[0] for k in keys}

    def put(job):
        key, v = job
        body = os.urandom(sized[key])
        client.put_object(Bucket=bucket, Key=key, Body=body, **attrs_for(key))
        if acl_grant and v == args.versions - 1:
            client.put_object_acl(Bucket=bucket, Key=key, **acl_grant)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, jobs))
    return keys


def seed_multipart(client, bucket, key, total, part, acl_grant=None):
    up = client.create_multipart_upload(Bucket=bucket, Key=key, **attrs_for(key))
    parts, n, done = [], 1, 0
    while done < total:
        size = min(part, total - done)
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                               Body=os.urandom(size))
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
        done, n = done + size, n + 1
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})
    if acl_grant:
        client.put_object_acl(Bucket=bucket, Key=key, **acl_grant)


def empty_bucket(client, bucket, delete=True):
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, MaxKeys=1000)
    for page in pages:
        objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if objs:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objs, "Quiet": True})
    if delete:
        client.delete_bucket(Bucket=bucket)


def count_latest(client, bucket):
    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, MaxKeys=1000)
    return sum(1 for p in pages for v in p.get("Versions", []) if v["IsLatest"])


# ----------------------------------------------------------------------------- the clients

class Tools:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.aws_default = os.path.join(work, "aws-default.cfg")
        self.aws_tuned = os.path.join(work, "aws-tuned.cfg")
        for path, conc in ((self.aws_default, None), (self.aws_tuned, args.peer_concurrency)):
            with open(path, "w") as f:
                f.write("[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n")
                if conc:
                    f.write(f"  max_concurrent_requests = {conc}\n  max_queue_size = {conc * 20}\n")

    def command(self, tool, setting, endpoint, src, dst):
        """argv and extra environment for one client; `None` when it is not installed."""
        a = self.args
        if tool == "s3-failback":
            state = tempfile.mkdtemp(dir=self.work)
            argv = [a.binary, "restore", "--yes", "--quiet",
                    "--source", f"s3://{src}", "--dest", f"s3://{dst}",
                    "--source-region", "eu-west-1", "--dest-region", "us-east-1",
                    "--endpoint-url", endpoint, "--path-style",
                    "--state-dir", os.path.join(state, "state"), "--report-dir", os.path.join(state, "reports")]
            if setting == "tuned":
                argv += ["--concurrency", str(a.s3f_tuned)]
            return argv, {}
        if tool == "aws s3 sync":
            cfg = self.aws_default if setting == "default" else self.aws_tuned
            argv = [a.aws, "s3", "sync", f"s3://{src}", f"s3://{dst}", "--endpoint-url", endpoint,
                    "--only-show-errors", "--no-progress"]
            return argv, {"AWS_CONFIG_FILE": cfg}
        if tool == "rclone copy":
            if not a.rclone:
                return None
            argv = [a.rclone, "copy", f"bench:{src}", f"bench:{dst}", "--s3-no-check-bucket", "-q"]
            if setting == "tuned":
                argv += ["--transfers", str(a.peer_concurrency), "--checkers", str(a.peer_concurrency)]
            env = {"RCLONE_CONFIG": os.path.join(self.work, "no-rclone.conf"),
                   "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                   "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint, "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
                   "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
                   "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                   "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
            return argv, env
        if tool == "rust CopyObject loop":
            return [a.ceiling, endpoint, src, dst, "--concurrency", str(a.ceiling_concurrency)], {}
        if tool == "boto3 pool":
            return [sys.executable, os.path.abspath(__file__), "boto3-copy", endpoint, src, dst,
                    str(a.peer_concurrency)], {}
        raise ValueError(tool)


def run_child(argv, env):
    """Runs one client; (wall s, CPU s, peak RSS MiB, exit code, stderr tail)."""
    full_env = dict(os.environ, **env)
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=err)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    tail = err.read()[-2000:].decode(errors="replace")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, proc.returncode, tail


def boto3_copy_main(endpoint, src, dst, pool):
    """The boto3 thread pool: list the source, copy every latest version."""
    client = s3(endpoint, pool=pool)
    latest = [(v["Key"], v["VersionId"])
              for p in client.get_paginator("list_object_versions").paginate(Bucket=src, MaxKeys=1000)
              for v in p.get("Versions", []) if v["IsLatest"]]

    def copy(kv):
        client.copy_object(Bucket=dst, Key=kv[0], CopySource={"Bucket": src, "Key": kv[0], "VersionId": kv[1]})

    with ThreadPoolExecutor(pool) as ex:
        list(ex.map(copy, latest))


# ----------------------------------------------------------------------------- measuring

class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.tools = Tools(args, work)
        self.rows = []
        self.notes = []
        self.uniq = 0

    def one_run(self, server, endpoint, admin, case, tool, setting, src, expected, ownership):
        self.uniq += 1
        # A valid bucket name: lower case, digits and inner hyphens.
        dst = f"d{self.uniq:04d}-" + re.sub("[^a-z0-9]+", "-", case.lower()).strip("-")[:24].strip("-")
        make_bucket(admin, dst, ownership)
        cmd = self.tools.command(tool, setting, endpoint, src, dst)
        before = server.requests_so_far()
        wall, cpu, rss, code, tail = run_child(*cmd)
        time.sleep(0.3)  # the server logs a request after its answer
        requests = server.requests_so_far() - before
        got = count_latest(admin, dst)
        ok = code == 0 and got == expected
        if not ok:
            self.notes.append(f"{case} / {tool} {setting}: exit {code}, {got} of {expected} objects; {tail.strip()[-300:]}")
            log(f"  FAILED {tool} {setting}: exit {code}, {got}/{expected}: {tail.strip()[-300:]}")
        empty_bucket(admin, dst)
        return dict(wall=wall, cpu=cpu, rss=rss, requests=requests, ok=ok)

    def measure(self, case, server, endpoint, admin, variants, src, expected, runs, ownership="BucketOwnerEnforced"):
        """Runs every (tool, setting) `runs` times, interleaved; appends median rows."""
        results = {v: [] for v in variants}
        for r in range(runs):
            for tool, setting in variants:
                if self.tools.command(tool, setting, endpoint, src, "x") is None:
                    continue
                res = self.one_run(server, endpoint, admin, case, tool, setting, src, expected, ownership)
                log(f"  {case} [{r + 1}/{runs}] {tool} {setting}: {res['wall']:.2f} s, "
                    f"{expected / res['wall']:.0f} obj/s, {res['requests']} requests, CPU {res['cpu']:.2f} s")
                results[(tool, setting)].append(res)
        out = []
        for (tool, setting), rs in results.items():
            good = [x for x in rs if x["ok"]]
            if not good:
                continue
            wall = statistics.median(x["wall"] for x in good)
            row = dict(
                case=case, server=server.name, tool=tool, setting=setting,
                concurrency=self.concurrency_of(tool, setting), runs=len(good), objects=expected,
                wall_s=wall, objects_per_s=expected / wall,
                requests_per_object=statistics.median(x["requests"] for x in good) / expected,
                cpu_s=statistics.median(x["cpu"] for x in good),
                cpu_s_per_1k=statistics.median(x["cpu"] for x in good) / expected * 1000,
                peak_rss_mib=max(x["rss"] for x in good),
            )
            out.append(row)
        s3f = next((r for r in out if r["tool"] == "s3-failback" and r["setting"] == "default"), None)
        for row in out:
            row["s3f_speed_ratio"] = s3f["objects_per_s"] / row["objects_per_s"] if s3f else None
            row["s3f_cpu_ratio"] = s3f["cpu_s_per_1k"] / row["cpu_s_per_1k"] if s3f else None
        self.rows += out
        return out

    def concurrency_of(self, tool, setting):
        a = self.args
        if tool == "s3-failback":
            return a.s3f_tuned if setting == "tuned" else a.s3f_default
        if tool == "aws s3 sync":
            return a.peer_concurrency if setting == "tuned" else 10
        if tool == "rclone copy":
            return a.peer_concurrency if setting == "tuned" else 4
        if tool == "rust CopyObject loop":
            return a.ceiling_concurrency
        return a.peer_concurrency


# ----------------------------------------------------------------------------- fidelity

def fidelity(bench, server, admin, args, acl_grant):
    src = "fidelity-replica"
    make_bucket(admin, src, "ObjectWriter", region="eu-west-1")
    args.count_now = args.fidelity_count
    keys = seed_small(admin, src, args, acl_grant)
    mkey = "p00/multipart.bin"
    seed_multipart(admin, src, mkey, 3 * 5 * MIB + 1234, 5 * MIB, acl_grant)
    keys.append(mkey)
    results = []
    for tool in ("s3-failback", "aws s3 sync", "rclone copy"):
        cmd = bench.tools.command(tool, "default", server.endpoint, src, "x")
        if cmd is None:
            continue
        dst = f"fidelity-{tool.split()[0]}".lower()
        make_bucket(admin, dst, "ObjectWriter")
        wall, cpu, rss, code, tail = run_child(*bench.tools.command(tool, "default", server.endpoint, src, dst))
        kept = {k: 0 for k in ("bytes", "content-type", "metadata", "tags", "acl", "etag")}
        mp = {}
        for key in keys:
            got = compare(admin, src, dst, key)
            for k, v in got.items():
                kept[k] += v
            if key == mkey:
                mp = got
        results.append(dict(tool=tool, exit=code, sampled=len(keys), kept=kept, multipart=mp))
        empty_bucket(admin, dst)
        log(f"  fidelity {tool}: {kept} multipart {mp}")
    return results


def compare(client, src, dst, key):
    def grab(bucket):
        try:
            h = client.head_object(Bucket=bucket, Key=key)
        except Exception:
            return None
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        tags = sorted((t["Key"], t["Value"]) for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"])
        acl = client.get_object_acl(Bucket=bucket, Key=key)
        grants = sorted(json.dumps(g, sort_keys=True) for g in acl["Grants"])
        return dict(bytes=hashlib.sha256(body).hexdigest(), ctype=h.get("ContentType"),
                    meta=h.get("Metadata"), tags=tags, acl=grants, etag=h.get("ETag"))

    a, b = grab(src), grab(dst)
    if b is None:
        return {k: 0 for k in ("bytes", "content-type", "metadata", "tags", "acl", "etag")}
    return {"bytes": int(a["bytes"] == b["bytes"]), "content-type": int(a["ctype"] == b["ctype"]),
            "metadata": int(a["meta"] == b["meta"]), "tags": int(a["tags"] == b["tags"]),
            "acl": int(a["acl"] == b["acl"]), "etag": int(a["etag"] == b["etag"])}


# ----------------------------------------------------------------------------- planner

def planner(args):
    if not args.bench_plan:
        return [], "bench_plan not built"
    try:
        out = subprocess.run([args.bench_plan, "--versions", str(args.plan_versions)],
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return [], "bench_plan timed out"
    with open(os.path.join(args.out, "bench_plan.txt"), "w") as f:
        f.write(out.stdout + out.stderr)
    rows = []
    for line in out.stdout.splitlines():
        if line.startswith("result "):
            fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            rows.append(fields)
    if rows:
        return rows, ""
    # Older bench_plan builds print only a human table: keep it, unparsed, for the reader.
    return rows, "bench_plan printed no `result` lines; its own output:\n\n```\n" + out.stdout.strip() + "\n```"


# ----------------------------------------------------------------------------- report

def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


COLUMNS = ["case", "server", "tool", "setting", "concurrency", "runs", "objects", "wall_s", "objects_per_s",
           "requests_per_object", "cpu_s_per_1k", "peak_rss_mib", "s3f_speed_ratio", "s3f_cpu_ratio"]


def markdown(bench, ceilings, targets, fid, plan_rows, plan_note, header):
    lines = [header, "",
             "| case | server | tool | setting | conc. | runs | wall s | obj/s | req/obj | CPU s/1k obj | peak RSS MiB | s3f speed ÷ this | s3f CPU ÷ this |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in bench.rows:
        rate = format(r["objects_per_s"], ".0f" if r["objects_per_s"] >= 10 else ".3f")
        lines.append(
            f"| {r['case']} | {r['server']} | {r['tool']} | {r['setting']} | {r['concurrency']} | {r['runs']} | "
            f"{r['wall_s']:.2f} | {rate} | {r['requests_per_object']:.2f} | "
            f"{r['cpu_s_per_1k']:.3f} | {r['peak_rss_mib']:.0f} | {fmt(r['s3f_speed_ratio'], '.2f')} | "
            f"{fmt(r['s3f_cpu_ratio'], '.2f')} |")
    lines += ["", "Ceiling (best rate of the ceiling clients, same run): " +
              "; ".join(f"{k}: {v[0]:.0f} obj/s ({v[1]})" for k, v in ceilings.items()), ""]
    if fid:
        lines += ["Fidelity (primary accepting ACLs; kept / sampled; multipart object separately):", "",
                  "| tool | bytes | Content-Type | metadata | tags | ACL grants | ETag | multipart: all kept |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in fid:
            k, n = f["kept"], f["sampled"]
            mp = "yes" if f["multipart"] and all(f["multipart"].values()) else \
                "no (" + ", ".join(a for a, v in f["multipart"].items() if not v) + ")"
            lines.append(f"| {f['tool']} | {k['bytes']}/{n} | {k['content-type']}/{n} | {k['metadata']}/{n} | "
                         f"{k['tags']}/{n} | {k['acl']}/{n} | {k['etag']}/{n} | {mp} |")
        lines.append("")
    lines += projection(bench, bench.args) + [""]
    lines += ["Planner (bench_plan):", ""]
    if plan_rows:
        lines += ["| versions | total versions | plan s | versions/s | peak RSS MiB |", "|---:|---:|---:|---:|---:|"]
        for p in plan_rows:
            lines.append(f"| {p.get('versions', 'n/a')} | {p.get('total_versions', 'n/a')} | {p.get('plan_s', 'n/a')} | "
                         f"{p.get('versions_per_s', 'n/a')} | {p.get('peak_rss_mib', 'n/a')} |")
    else:
        lines.append(f"n/a: {plan_note}")
    lines += ["", "Targets (issue 13):", ""]
    for name, ok, detail in targets:
        lines.append(f"- {'PASS' if ok else ('n/a' if ok is None else 'MISS')}: {name}: {detail}")
    if bench.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in bench.notes]
    return "\n".join(lines) + "\n"


def projection(bench, args):
    """Copies/s one machine would drive against real S3, from this run's CPU and requests.

    rate = min(cores / CPU s per copy, concurrency / (requests per object x RTT),
    3,500 writes/s x prefixes); writes per object are 1 for every tool here.
    """
    rows = [r for r in bench.rows if r["case"] == "small objects" and r["server"] == "moto-keepalive"
            and r["tool"] in ("s3-failback", "aws s3 sync", "rclone copy")]
    cap = 3500 * args.s3_prefixes
    rtt = args.s3_rtt_ms / 1000
    lines = [f"Projection to S3 (RTT {args.s3_rtt_ms} ms per request, {args.s3_prefixes} prefix(es): "
             f"≤ {cap:,} writes/s; client CPU per copy as measured here, every core busy):", "",
             "| tool | setting | conc. | CPU ms/copy | req/obj | 2 cores obj/s | 8 cores obj/s | 32 cores obj/s | "
             "10M objects h (32 cores) | 1B objects h (32 cores) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_copy = r["cpu_s_per_1k"] / 1000
        conc_bound = r["concurrency"] / (r["requests_per_object"] * rtt)
        rates = [min(k / per_copy, conc_bound, cap) for k in (2, 8, 32)]
        lines.append(f"| {r['tool']} | {r['setting']} | {r['concurrency']} | {per_copy * 1000:.2f} | "
                     f"{r['requests_per_object']:.2f} | " + " | ".join(f"{x:,.0f}" for x in rates) +
                     f" | {1e7 / rates[2] / 3600:.1f} | {1e9 / rates[2] / 3600:,.0f} |")
    return lines


def find(rows, **kw):
    return next((r for r in rows if all(r.get(k) == v for k, v in kw.items())), None)


def main():
    p = argparse.ArgumentParser(prog="scripts/bench")
    p.add_argument("--count", type=int, default=600, help="small objects (keys) per case")
    p.add_argument("--delay-count", type=int, default=600, help="small objects in the +delay case")
    p.add_argument("--sizes", default="1k", help="size distribution, e.g. 1k or 1k:0.9,64k:0.1")
    p.add_argument("--versions", type=int, default=1, help="versions per key (the latest is restored)")
    p.add_argument("--prefixes", type=int, default=4, help="top-level prefixes the keys spread over")
    p.add_argument("--runs", type=int, default=3, help="runs per client (median)")
    p.add_argument("--delay-ms", type=int, default=80)
    p.add_argument("--large-mib", type=int, default=256, help="large object size (0: skip)")
    p.add_argument("--large-part-mib", type=int, default=64)
    p.add_argument("--large-runs", type=int, default=3)
    p.add_argument("--fidelity-count", type=int, default=20)
    p.add_argument("--plan-versions", type=int, default=1_000_000)
    p.add_argument("--peer-concurrency", type=int, default=64)
    p.add_argument("--s3f-default", type=int, default=256, help="s3-failback's built-in default (for the report)")
    p.add_argument("--s3f-tuned", type=int, default=512)
    p.add_argument("--ceiling-concurrency", type=int, default=256)
    p.add_argument("--servers", default="moto,moto-keepalive")
    p.add_argument("--s3-rtt-ms", type=int, default=50, help="projection: S3 round trip of a small copy")
    p.add_argument("--s3-prefixes", type=int, default=1, help="projection: prefixes the keys spread over")
    p.add_argument("--skip", default="", help="comma list of: speed,delay,fidelity,large,plan")
    p.add_argument("--binary", required=True)
    p.add_argument("--ceiling", required=True)
    p.add_argument("--proxy", required=True)
    p.add_argument("--bench-plan", default="")
    p.add_argument("--aws", required=True)
    p.add_argument("--rclone", default="")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="s3f-bench-")
    bench = Bench(args, work)
    started = time.time()
    load_before = os.getloadavg()
    servers = {}
    ceilings, targets, fid = {}, [], []
    acl_grant = {"ACL": "public-read"}
    try:
        py = sys.executable
        moto_bin = os.path.join(os.path.dirname(py), "moto_server")
        makers = {
            "moto": lambda port: [moto_bin, "-H", "127.0.0.1", "-p", str(port)],
            "moto-keepalive": lambda port: [py, os.path.join(os.path.dirname(__file__), "bench_server.py"), str(port)],
        }
        speed_variants = [("s3-failback", "default"), ("aws s3 sync", "default"), ("rclone copy", "default"),
                          ("s3-failback", "tuned"), ("aws s3 sync", "tuned"), ("rclone copy", "tuned"),
                          ("rust CopyObject loop", "ceiling"), ("boto3 pool", "ceiling")]
        for name in args.servers.split(","):
            server = servers[name] = Server(name, makers[name], work)
            admin = s3(server.endpoint)
            if "speed" not in skip:
                log(f"{name}: seeding {args.count} keys x {args.versions} versions")
                make_bucket(admin, "replica-small", None, region="eu-west-1")
                args.count_now = args.count
                seed_small(admin, "replica-small", args)
                rows = bench.measure("small objects", server, server.endpoint, admin, speed_variants,
                                     "replica-small", args.count, args.runs)
                cands = [r for r in rows if r["tool"] in ("rust CopyObject loop", "boto3 pool")
                         or (r["tool"] == "aws s3 sync" and r["setting"] == "tuned")]
                if cands:
                    best = max(cands, key=lambda r: r["objects_per_s"])
                    ceilings[name] = (best["objects_per_s"], f"{best['tool']} {best['setting']}")
        ka = servers.get("moto-keepalive")
        if ka and "delay" not in skip:
            admin = s3(ka.endpoint)
            proxy = DelayProxy(args.proxy, ka.port, args.delay_ms)
            try:
                make_bucket(admin, "replica-delay", None, region="eu-west-1")
                args.count_now = args.delay_count
                seed_small(admin, "replica-delay", args)
                # The round trip one request sees through the delay: a HEAD on one connection.
                one = s3(proxy.endpoint, pool=1)
                one.head_bucket(Bucket="replica-delay")
                rtts = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    one.head_object(Bucket="replica-delay", Key="p00/obj-0000000.bin")
                    rtts.append(time.perf_counter() - t0)
                rtt = statistics.median(rtts)
                rows = bench.measure(f"small objects +{args.delay_ms} ms", ka, proxy.endpoint, admin,
                                     [("s3-failback", "default"), ("aws s3 sync", "default"), ("rclone copy", "default")],
                                     "replica-delay", args.delay_count, args.runs)
            finally:
                proxy.stop()
            s3f = find(rows, tool="s3-failback")
            bound_rtt = args.s3f_default / rtt
            bound = min(bound_rtt, ceilings.get("moto-keepalive", (float("inf"),))[0])
            if s3f:
                targets.append((f"+{args.delay_ms} ms: ≥ 90% of min(ceiling, concurrency/RTT)",
                                s3f["objects_per_s"] >= 0.9 * bound,
                                f"{s3f['objects_per_s']:.0f} obj/s vs bound {bound:.0f} "
                                f"(RTT {rtt * 1000:.0f} ms, {args.s3f_default}/RTT = {bound_rtt:.0f}; "
                                f"{s3f['objects_per_s'] / bound * 100:.0f}%)"))
                for peer, want in (("aws s3 sync", 3.0), ("rclone copy", 1.5)):
                    pr = find(rows, tool=peer)
                    if pr:
                        ratio = s3f["objects_per_s"] / pr["objects_per_s"]
                        targets.append((f"+{args.delay_ms} ms: ≥ {want}x {peer} (defaults)", ratio >= want,
                                        f"{ratio:.2f}x"))
        for name, (ceil, who) in ceilings.items():
            s3f = find(bench.rows, case="small objects", server=name, tool="s3-failback", setting="default")
            s3t = find(bench.rows, case="small objects", server=name, tool="s3-failback", setting="tuned")
            if not s3f:
                targets.append((f"{name}: s3-failback measured", False, "no successful s3-failback run"))
                continue
            best_s3f = max(x["objects_per_s"] for x in (s3f, s3t) if x)
            targets.append((f"{name}: s3-failback default ≥ 95% of ceiling", s3f["objects_per_s"] >= 0.95 * ceil,
                            f"{s3f['objects_per_s']:.0f} vs {ceil:.0f} ({who}): {s3f['objects_per_s'] / ceil * 100:.0f}%"
                            f" (tuned {s3t['objects_per_s'] / ceil * 100:.0f}%)" if s3t else ""))
            for peer in ("aws s3 sync", "rclone copy"):
                prs = [r for r in bench.rows if r["case"] == "small objects" and r["server"] == name and r["tool"] == peer]
                if prs:
                    best = max(prs, key=lambda r: r["objects_per_s"])
                    targets.append((f"{name}: ahead of {peer} at its best", best_s3f > best["objects_per_s"],
                                    f"{best_s3f:.0f} vs {best['objects_per_s']:.0f} ({best['setting']})"))
            aws = [r for r in bench.rows if r["server"] == name and r["case"] == "small objects" and r["tool"] == "aws s3 sync"]
            rcl = [r for r in bench.rows if r["server"] == name and r["case"] == "small objects" and r["tool"] == "rclone copy"]
            if s3f and aws:
                lo = min(r["cpu_s_per_1k"] for r in aws)
                targets.append((f"{name}: CPU/1k ≤ 1/4 of AWS CLI's", s3f["cpu_s_per_1k"] <= lo / 4,
                                f"{s3f['cpu_s_per_1k']:.3f} vs {lo:.3f} s ({s3f['cpu_s_per_1k'] / lo:.2f}x)"))
            if s3f and rcl:
                lo = min(r["cpu_s_per_1k"] for r in rcl)
                targets.append((f"{name}: CPU/1k < rclone's", s3f["cpu_s_per_1k"] < lo,
                                f"{s3f['cpu_s_per_1k']:.3f} vs {lo:.3f} s ({s3f['cpu_s_per_1k'] / lo:.2f}x)"))
        if ka and "large" not in skip and args.large_mib > 0:
            admin = s3(ka.endpoint)
            make_bucket(admin, "replica-large", None, region="eu-west-1")
            log(f"seeding one {args.large_mib} MiB object in {args.large_part_mib} MiB parts")
            seed_multipart(admin, "replica-large", "big/large.bin", args.large_mib * MIB, args.large_part_mib * MIB)
            rows = bench.measure(f"large {args.large_mib} MiB multipart", ka, ka.endpoint, admin,
                                 [("s3-failback", "default"), ("aws s3 sync", "default"), ("rclone copy", "default")],
                                 "replica-large", 1, args.large_runs)
            src_etag = admin.head_object(Bucket="replica-large", Key="big/large.bin")["ETag"]
            for r in rows:
                bench.notes.append(f"large object, {r['tool']}: {args.large_mib / r['wall_s']:.0f} MiB/s")
            bench.notes.append(f"large object source ETag {src_etag}; the fidelity table says which tool "
                               "keeps a multipart ETag")
            empty_bucket(admin, "replica-large")
        if ka and "fidelity" not in skip:
            fid = fidelity(bench, ka, s3(ka.endpoint), args, acl_grant)
            s3f = next((f for f in fid if f["tool"] == "s3-failback"), None)
            if s3f:
                allkept = all(v == s3f["sampled"] for v in s3f["kept"].values())
                targets.append(("fidelity: s3-failback keeps every attribute, multipart included", allkept,
                                json.dumps(s3f["kept"])))
    finally:
        for s in servers.values():
            s.stop()
    plan_rows, plan_note = ([], "skipped") if "plan" in skip else planner(args)
    for p_ in plan_rows:
        if p_.get("versions") == str(args.plan_versions) or p_ is plan_rows[-1]:
            vps = float(p_.get("versions_per_s", 0))
            rss = float(p_.get("peak_rss_mib", 0))
            targets.append(("planner ≥ 1M versions/s, ≤ 64 MiB", vps >= 1e6 and rss <= 64,
                            f"{vps:,.0f} versions/s, {rss:.0f} MiB"))
            break
    load_after = os.getloadavg()
    header = (f"scripts/bench on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
              f"{time.time() - started:.0f} s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
              f"{args.count} keys ({args.sizes}, {args.versions} version(s), {args.prefixes} prefixes), "
              f"median of {args.runs} interleaved runs; s3-failback default concurrency {args.s3f_default}")
    with open(os.path.join(args.out, "bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in bench.rows:
            w.writerow(r)
    md = markdown(bench, ceilings, targets, fid, plan_rows, plan_note, header)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(md)
    print(md)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "boto3-copy":
        boto3_copy_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
