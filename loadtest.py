"""Load a local serve.py with concurrent clients, for a bounded time, and print latency and throughput.

    python loadtest.py http://127.0.0.1:8000 conversations.csv [--clients 16] [--seconds 60] [--turns 10]
    python loadtest.py http://127.0.0.1:8000 conversations.csv --clients 1 --baseline RUN_DIR --session-turns 30

Each client sends POST /predict with one dialogue after another (the CSV's dialogues cut to their first
--turns turns; shorter ones are skipped) as soon as its previous answer came, for --seconds. Printed (and with
--json written): the server's cached_turns (serve.py --cached-turns 0: every request a new conversation, its
turns all encoded; with the cache on, a dialogue sent again is only looked up), requests, failed (any non-200
or transport error), latency p50 / p95 / max in ms, throughput in turns per second. --baseline RUN_DIR also
times predict.py's batch path (prediction.predict_conversations, the run loaded once, best of 3) on the same
dialogues in this process: the throughput a server cannot beat on the same CPU (stop other work first).
--session-turns N times appending each turn of a session of N turns (POST /sessions/ID/turns), N turns of one
dialogue repeated. Only a server on this machine is loaded (127.0.0.1, localhost or ::1).
"""
import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import httpx
import numpy as np

import utils
from core import config
from owndata import conversations
from utils import UserError

LOCAL = ('127.0.0.1', 'localhost', '::1')
client_count = config.checked('client_count', int, lambda v: 1 <= v <= 256, 'an integer in 1..256')
duration = config.checked('duration', float, lambda v: 0 < v <= 600, 'a number of seconds in (0, 600]')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('url', help='the server, e.g. http://127.0.0.1:8000 (this machine only)')
    p.add_argument('csv', help='conversations (the CSV schemas predict.py reads): the dialogues to send')
    p.add_argument('--clients', type=client_count, default=1, help='concurrent clients, 1-256 (default 1)')
    p.add_argument('--seconds', type=duration, default=10, help='how long to send (default 10, at most 600)')
    p.add_argument('--turns', type=config.positive_int, default=10, help='turns per dialogue sent (default 10)')
    p.add_argument('--baseline', metavar='RUN_DIR', help="also time predict.py's batch path on the same dialogues")
    p.add_argument('--session-turns', type=config.non_negative_int, default=0,
                   help='also time appending turns to a session this long (default 0: not timed)')
    p.add_argument('--json', metavar='FILE', help='write the numbers to this JSON file')
    args = p.parse_args(argv)
    if urlparse(args.url).hostname not in LOCAL:
        p.error(f"{args.url}: loadtest.py loads a server on this machine only ({', '.join(LOCAL)})")
    return args


def read_dialogues(csv, turns):
    """The CSV's dialogues with at least `turns` turns, cut to their first `turns`: lists of {speaker, text}."""
    table = conversations.read_conversations([csv], split='test').table
    out = [[{'speaker': s, 'text': t} for s, t in zip(d['speaker'][:turns], d['text'][:turns])]
           for _, d in table.groupby('key', sort=False) if len(d) >= turns]
    if not out:
        raise UserError(f"{csv} has no dialogue of {turns} turns or more: give a smaller --turns")
    return out


async def client(http, url, dialogues, start, stop_at, latencies, failures):
    k = start
    while time.perf_counter() < stop_at:
        dialogue = dialogues[k % len(dialogues)]
        k += 1
        tic = time.perf_counter()
        try:
            answer = await http.post(f'{url}/predict', json={'turns': dialogue})
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        (latencies if ok else failures).append((time.perf_counter() - tic, len(dialogue)))


async def load(url, dialogues, clients, seconds):
    latencies, failures = [], []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        cached = await cached_turns(http, url)
        stop_at = time.perf_counter() + seconds
        tic = time.perf_counter()
        await asyncio.gather(*(client(http, url, dialogues, i * 7, stop_at, latencies, failures)
                               for i in range(clients)))
        elapsed = time.perf_counter() - tic
    ms = np.array([t for t, _ in latencies]) * 1000
    return dict(clients=clients, server_cached_turns=cached, seconds=round(elapsed, 2),
                requests=len(latencies) + len(failures),
                failed=len(failures), turns_per_s=round(sum(n for _, n in latencies) / elapsed, 1),
                p50_ms=round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                p95_ms=round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
                max_ms=round(float(ms.max()), 1) if len(ms) else None)


async def cached_turns(http, url):
    """The server's --cached-turns (GET /info; None if it does not say): 0, every request is a new conversation
    to it; more, a dialogue sent again is looked up, not encoded again."""
    try:
        return (await http.get(f'{url}/info')).json()['limits']['cached_turns']
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


async def session_cost(url, dialogue, n):
    """Milliseconds of each append to a session of n turns (the dialogue's turns repeated)."""
    times = []
    async with httpx.AsyncClient(timeout=60) as http:
        sid = (await http.post(f'{url}/sessions')).json()['id']
        for k in range(n):
            tic = time.perf_counter()
            answer = await http.post(f'{url}/sessions/{sid}/turns', json=dialogue[k % len(dialogue)])
            answer.raise_for_status()
            times.append((time.perf_counter() - tic) * 1000)
        await http.delete(f'{url}/sessions/{sid}')
    return dict(session_turns=n, append_ms_first=round(times[0], 1), append_ms_last=round(times[-1], 1),
                append_ms_last5_mean=round(float(np.mean(times[-5:])), 1))


def baseline(run_dir, dialogues):
    """predict.py's batch throughput on the dialogues (turns per second), the run loaded once, best of 3."""
    import pandas as pd

    from owndata import prediction
    loaded = prediction.load(run_dir, progress=False)
    frame = pd.DataFrame([(str(d), t, turn['speaker'], turn['text']) for d, turns in enumerate(dialogues)
                          for t, turn in enumerate(turns)], columns=['dialogue', 'turn', 'speaker', 'text'])
    best = float('inf')
    for _ in range(3):
        tic = time.perf_counter()
        prediction.predict_conversations(loaded, prediction.read_input(frame, {}))
        best = min(best, time.perf_counter() - tic)
    return dict(baseline_turns_per_s=round(len(frame) / best, 1), baseline_turns=len(frame))


def main(argv=None):
    args = parse_args(argv)
    dialogues = read_dialogues(args.csv, args.turns)
    result = asyncio.run(load(args.url.rstrip('/'), dialogues, args.clients, args.seconds))
    if args.session_turns:
        try:
            result.update(asyncio.run(session_cost(args.url.rstrip('/'), dialogues[0], args.session_turns)))
        except httpx.HTTPError as err:
            raise UserError(f"--session-turns: a session request to {args.url} failed ({err or type(err).__name__}); "
                            "is serve.py running there?") from None
    if args.baseline:
        result.update(baseline(args.baseline, dialogues))
    print(' '.join(f'{k}={v}' for k, v in result.items()))
    if args.json:
        utils.save_text(args.json, json.dumps(result, indent=1) + '\n')


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
