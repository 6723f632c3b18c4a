"""Serve a `--Dataset custom` run over HTTP: the emotions of conversations, whole or turn by turn, and a live page.
A run trained on recordings takes each turn's recording with it (base64 in the JSON: GET /info's media).

    python serve.py RUN_DIR [--host 127.0.0.1] [--port 8000]        # then open http://127.0.0.1:8000/
    python serve.py RUN_DIR --replicas 2 [--address ray://HOST:10001]  # N model replicas under Ray Serve

    curl -s localhost:8000/predict -H 'content-type: application/json' \\
         -d '{"turns": [{"speaker": "Ann", "text": "I got the job!"}, {"speaker": "Bob", "text": "No way!"}]}'

The run is loaded once, as predict.py loads it (prediction.load: its config.json, checkpoint and text encoder,
the encoder's sha256 checked against the recipe; a folder that is not a custom run exits 2). Endpoints:

    POST   /predict               {"turns": [{"speaker", "text"}, ...]} or {"dialogues": [{"turns": [...]}, ...]}:
                                  per turn `predicted` and `probabilities` (label -> p), predict.py's numbers;
                                  a run trained on recordings: each turn with "audio" / "video" (base64 of a media
                                  file) and optional "start" / "end" seconds (serving/media_turns.py)
    POST   /sessions              a conversation session: {"id", "turns": []}
    POST   /sessions/{id}/turns   a turn (as in /predict): append it; every turn's prediction so far, each with
                                  `final` (it cannot change: a --causal run) and `revised` / `previous`
    GET    /sessions/{id}         the turns so far;  DELETE /sessions/{id}
    GET    /health, GET /info     liveness; labels, modalities, the media a turn needs, encoder, model flags,
                                  causal, limits
    GET    /docs                  the OpenAPI page (FastAPI's); GET / the live page (serving/page.html)

Requests arriving together run as one batch (service.py: bounded by --batch-dialogues, --batch-turns and
--batch-wait-ms); a dialogue's numbers do not depend on its batch. A bad request (malformed JSON, a missing
field, an empty text, over a limit of /info, an unknown session) is a 4xx whose `error` names the field or
the limit; the server goes on serving.
"""
import argparse
import sys

import utils
from core.config import non_negative_int
from owndata import prediction
from serving import api, service


def parse_args(argv=None):
    d = service.Limits()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('run_dir', help='the run folder of train.py --Dataset custom')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only)')
    p.add_argument('--port', type=int, default=8000, help='port (default 8000)')
    p.add_argument('--text-model', help="the run's text encoder, where it is not at the recorded place (predict.py's)")
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'], help='auto: cuda when available')
    p.add_argument('--batch-dialogues', type=int, default=d.batch_dialogues, help='dialogues run in one batch at most')
    p.add_argument('--batch-turns', type=int, default=d.batch_turns, help='turns run in one batch at most')
    p.add_argument('--batch-wait-ms', type=float, default=d.batch_wait_ms,
                   help='once a request waits, how long to wait for others to batch with it (default %(default)s)')
    p.add_argument('--max-sessions', type=int, default=d.sessions, help='sessions held at once')
    p.add_argument('--session-idle-s', type=float, default=d.session_idle_s, help='a session idle this long is dropped')
    p.add_argument('--cached-turns', type=non_negative_int, default=d.cached_turns,
                   help="turns whose text features are kept for later requests, a session's earlier turns "
                        "(default %(default)s; 0: none)")
    p.add_argument('--body-bytes', type=int, help=f'a request body at most (default {d.body_bytes:,}; a run trained on '
                                                   f'recordings {service.MEDIA_BODY_BYTES:,}: minutes of video)')
    p.add_argument('--recording-seconds', type=float, default=d.recording_seconds,
                   help="a turn's recording at most, in seconds (default %(default)s)")
    p.add_argument('--replicas', type=int, default=0, help='run N model replicas under Ray Serve (0: this process)')
    p.add_argument('--address', help='--replicas: the Ray cluster to join (default: start a local one)')
    args = p.parse_args(argv)
    for flag in ('batch_dialogues', 'batch_turns', 'max_sessions'):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.batch_wait_ms < 0 or args.session_idle_s <= 0 or args.replicas < 0:
        p.error("--batch-wait-ms must be >= 0, --session-idle-s > 0 and --replicas >= 0")
    if (args.body_bytes is not None and args.body_bytes < 1000) or not 0 < args.recording_seconds <= 24 * 3600:
        p.error("--body-bytes must be at least 1000 and --recording-seconds in (0, 86400]")
    if args.address and not args.replicas:
        p.error("--address names the Ray cluster of --replicas: give --replicas N too")
    args.device = utils.parsed_device(p, args.device)
    return args


def limits_of(args, run_info):
    """The served run's limits: the flags', the body limit by what its turns carry (text, or recordings)."""
    body = args.body_bytes or (service.MEDIA_BODY_BYTES if service.reads_recordings(run_info) else
                               service.Limits.body_bytes)
    return service.Limits(body_bytes=body, recording_seconds=args.recording_seconds,
                          batch_dialogues=args.batch_dialogues, batch_turns=args.batch_turns,
                          batch_wait_ms=args.batch_wait_ms, sessions=args.max_sessions,
                          session_idle_s=args.session_idle_s, cached_turns=args.cached_turns)


# ----------------------------------------------------------------------------- running it

def main(argv=None):
    args = parse_args(argv)
    if args.replicas:                       # the replicas load the model; here the run is only described
        run_info = prediction.describe(args.run_dir)
        service.refuse_replicated_recordings(run_info)
        from serving import replicas
        return replicas.run(args, limits_of(args, run_info))
    loaded = prediction.load(args.run_dir, args.text_model, args.device, workers=1, progress=False)
    limits = limits_of(args, loaded)
    import uvicorn
    print(f"serving {args.run_dir} on http://{args.host}:{args.port}/ (OpenAPI page: /docs)", flush=True)
    app = api.create_app(lambda: service.Service.in_process(loaded, limits), limits)
    uvicorn.run(app, host=args.host, port=args.port, log_level='info')     # a line per request


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
