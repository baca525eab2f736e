"""Raw rates of the primitives the server is bound by, measured on the server's cores.

  argon2   verifications/s of the password hash authsvc uses (argon2id, the same parameters),
           from enough threads to fill the cores: argon2-cffi releases the GIL and already runs
           its lanes in threads, so this is the machine's ceiling for logins.
  rs256    RS256 JWT signatures/s (PyJWT + cryptography, 2048-bit key, an access-token-sized
           payload), from N processes (N = server workers): the ceiling for refresh if a
           refresh did nothing but sign.
  rs256v   RS256 verifications/s, the same way (the ceiling for /auth/me's signature check).

Prints one JSON object. Run pinned with taskset like the server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import threading
import time
import uuid


def _argon2_worker(
    params: tuple[int, int, int], duration: float, threads: int
) -> tuple[int, float]:
    from argon2 import PasswordHasher

    t, m, p = params
    hasher = PasswordHasher(time_cost=t, memory_cost=m, parallelism=p)
    stored = hasher.hash("correct horse battery staple")
    counts = [0] * threads
    cpu0 = time.process_time()
    stop = time.perf_counter() + duration

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            hasher.verify(stored, "correct horse battery staple")
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts), time.process_time() - cpu0


def _payload() -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "http://127.0.0.1:8000",
        "sub": str(uuid.uuid4()),
        "aud": "authsvc",
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": "x" * 22,
        "sid": str(uuid.uuid4()),
        "client_id": "authsvc",
        "scope": "api",
        "roles": ["user"],
    }


def _rs256_worker(kind: str, duration: float, start_at: float) -> tuple[int, float]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key()
    payload = _payload()
    headers = {"kid": "k" * 43, "typ": "at+jwt"}
    token = jwt.encode(payload, key, algorithm="RS256", headers=headers)
    while time.time() < start_at:
        time.sleep(0.005)
    n = 0
    cpu0 = time.process_time()
    stop = time.perf_counter() + duration
    if kind == "rs256":
        while time.perf_counter() < stop:
            jwt.encode(payload, key, algorithm="RS256", headers=headers)
            n += 1
    else:
        while time.perf_counter() < stop:
            jwt.decode(token, public, algorithms=["RS256"], audience="authsvc")
            n += 1
    return n, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["argon2", "rs256", "rs256v"])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--argon2", default="3,65536,4", help="time_cost,memory_kib,parallelism")
    args = parser.parse_args()
    if args.kind == "argon2":
        t, m, p = (int(x) for x in args.argon2.split(","))
        started = time.perf_counter()
        n, cpu = _argon2_worker((t, m, p), args.duration, args.threads)
        rate = n / (time.perf_counter() - started)
    else:
        start_at = time.time() + 1.0  # let every process finish key generation first
        with mp.Pool(args.processes) as pool:
            counts = pool.starmap(
                _rs256_worker, [(args.kind, args.duration, start_at)] * args.processes
            )
        n = sum(c for c, _ in counts)
        cpu = sum(c for _, c in counts)
        rate = n / args.duration
    # cpu_ms: CPU time per operation (all threads), which the machine's other load barely moves
    print(json.dumps({"kind": args.kind, "rate": rate, "ops": n, "cpu_ms": cpu * 1000 / max(1, n)}))


if __name__ == "__main__":
    main()
