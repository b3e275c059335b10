#!/usr/bin/env python3
"""An agent that takes runs and never starts them, beside a working one.

One scripted agent `stuck` (4 slots) long-polls and starts nothing; one
mesh-agent `good` (1 slot) runs the built-in `noop` plan. 20 runs of `noop`
are submitted at once against a fresh meshd with `runs.delivery_lease: 2s`,
first with holding back on (`agents.hold_back_max: 10m`), then off (0, how
meshd placed runs before holding back existed); prints, for each, how many
succeeded within WAIT seconds, how long all took, and the attempts.

Usage: bench/stuck-agent.py [BUILD_DIR] [WAIT_S]   (build, 120 by default)
"""
import json, os, re, shutil, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
WAIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
RUNS = 20


def once(hold):
    work = tempfile.mkdtemp(prefix="polymesh-stuck.")
    admin = "bench-admin-" + os.urandom(12).hex()
    with open(f"{work}/mesh.yaml", "w") as f:
        f.write(f"runs: {{delivery_lease: 2s}}\nagents: {{hold_back_max: {hold}}}\n"
                "log: {level: warn}\n")
    meshd = subprocess.Popen(
        [f"{BUILD}/mesh/meshd/meshd", "--listen", "127.0.0.1:0", "--data-dir", work,
         "--config", f"{work}/mesh.yaml"],
        env=dict(os.environ, POLYMESH_ADMIN_TOKEN=admin),
        stdout=open(f"{work}/meshd.out", "w"), stderr=open(f"{work}/meshd.err", "w"))
    agent = None
    stop = threading.Event()
    try:
        url = None
        for _ in range(600):
            m = re.search(r"listening on (http://\S+)", open(f"{work}/meshd.out").read())
            if m:
                url = m.group(1)
                break
            if meshd.poll() is not None:
                break
            time.sleep(0.05)
        if not url:
            sys.exit("meshd did not start: " + open(f"{work}/meshd.err").read())

        def call(method, path, token, body=None):
            req = urllib.request.Request(
                url + path, method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + token,
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                sys.exit(f"{method} {path}: {e.code} {e.read().decode()}")

        reg = call("POST", "/v1/tokens", admin, {"kind": "registration", "name": "b"})
        sub = call("POST", "/v1/tokens", admin, {"kind": "submitter", "name": "s"})
        stuck = call("POST", "/v1/agents/register", reg["token"],
                     {"name": "stuck", "labels": {}, "plans": ["noop"], "capacity": 4})

        def take_and_never_start():
            while not stop.is_set():
                call("GET", f"/v1/agents/{stuck['id']}/runs?wait=1", stuck["access_token"])

        threading.Thread(target=take_and_never_start, daemon=True).start()
        with open(f"{work}/reg.token", "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(reg["token"])
        with open(f"{work}/agent.yaml", "w") as f:
            f.write(f'mesh: {{url: "{url}", registration_token_file: reg.token}}\n'
                    f'agent: {{name: good, capacity: 1, work_dir: "{work}/runs"}}\n'
                    "log: {level: warn}\nplans:\n  noop: {}\n")
        agent = subprocess.Popen([f"{BUILD}/agent-sdk/mesh-agent", "--config",
                                  f"{work}/agent.yaml"], cwd=work,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if len(call("GET", "/v1/agents?status=online", admin)["agents"]) == 2:
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        ids = [call("POST", "/v1/runs", sub["token"], {"plan": "noop"})["id"]
               for _ in range(RUNS)]
        while True:
            runs = [call("GET", f"/v1/runs/{i}", admin) for i in ids]
            done = sum(r["status"] == "success" for r in runs)
            if done == RUNS or time.monotonic() - t0 >= WAIT_S:
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
        held = call("GET", "/v1/agents/stuck", admin)
        print(f"hold_back_max={hold} success={done}/{RUNS} seconds={took:.1f} "
              f"attempts={sum(r['attempts'] for r in runs)} "
              f"stuck_lapsed_leases={held['lapsed_leases']}", flush=True)
    finally:
        stop.set()
        if agent:
            agent.terminate()
            agent.wait()
        meshd.terminate()
        meshd.wait()
        shutil.rmtree(work, ignore_errors=True)


for hold in ("10m", "0"):
    once(hold)
