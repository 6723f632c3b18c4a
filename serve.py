"""Serve a `--Dataset custom` run over HTTP: the emotions of conversations, whole or turn by turn, and a live page.

    python serve.py RUN_DIR [--host 127.0.0.1] [--port 8000]        # then open http://127.0.0.1:8000/
    python serve.py RUN_DIR --replicas 2 [--address ray://HOST:10001]  # N model replicas under Ray Serve

    curl -s localhost:8000/predict -H 'content-type: application/json' \\
         -d '{"turns": [{"speaker": "Ann", "text": "I got the job!"}, {"speaker": "Bob", "text": "No way!"}]}'

The run is loaded once, as predict.py loads it (predict.load: its config.json, checkpoint and text encoder,
the encoder's sha256 checked against the recipe; a folder that is not a custom run exits 2). Endpoints:

    POST   /predict               {"turns": [{"speaker", "text"}, ...]} or {"dialogues": [{"turns": [...]}, ...]}:
                                  per turn `predicted` and `probabilities` (label -> p), predict.py's numbers
    POST   /sessions              a conversation session: {"id", "turns": []}
    POST   /sessions/{id}/turns   {"speaker", "text"}: append a turn; every turn's prediction so far, each with
                                  `final` (it cannot change: a --causal run) and `revised` / `previous`
    GET    /sessions/{id}         the turns so far;  DELETE /sessions/{id}
    GET    /health, GET /info     liveness; labels, modalities, encoder, model flags, causal, limits
    GET    /docs                  the OpenAPI page (FastAPI's); GET / the live page (serve_page.html)

Requests arriving together run as one batch (service.py: bounded by --batch-dialogues, --batch-turns and
--batch-wait-ms); a dialogue's numbers do not depend on its batch. A bad request (malformed JSON, a missing
field, an empty text, over a limit of /info, an unknown session) is a 4xx whose `error` names the field or
the limit; the server goes on serving.
"""
import argparse
import os
import sys
from contextlib import asynccontextmanager
from typing import Annotated, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import predict
import service
import utils
from config import non_negative_int
from utils import UserError

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'serve_page.html')


def parse_args(argv=None):
    d = service.Limits()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('run_dir', help='the run folder of train.py --Dataset custom (text only)')
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
    p.add_argument('--replicas', type=int, default=0, help='run N model replicas under Ray Serve (0: this process)')
    p.add_argument('--address', help='--replicas: the Ray cluster to join (default: start a local one)')
    args = p.parse_args(argv)
    for flag in ('batch_dialogues', 'batch_turns', 'max_sessions'):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.batch_wait_ms < 0 or args.session_idle_s <= 0 or args.replicas < 0:
        p.error("--batch-wait-ms must be >= 0, --session-idle-s > 0 and --replicas >= 0")
    if args.address and not args.replicas:
        p.error("--address names the Ray cluster of --replicas: give --replicas N too")
    args.device = utils.parsed_device(p, args.device)
    return args


def limits_of(args):
    return service.Limits(batch_dialogues=args.batch_dialogues, batch_turns=args.batch_turns,
                          batch_wait_ms=args.batch_wait_ms, sessions=args.max_sessions,
                          session_idle_s=args.session_idle_s, cached_turns=args.cached_turns)


# ----------------------------------------------------------------------------- the app

def error(status, message):
    return JSONResponse({'error': message}, status_code=status)


def validation_message(errors):
    """FastAPI's validation errors as one line naming each field: 'turns.2.text: ...; ...'."""
    parts = []
    for e in errors:
        where = '.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'
        parts.append(f"{where}: {e['msg']}")
    return '; '.join(parts)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is answered 413 before it is parsed."""

    class TooLarge(Exception):
        pass

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        message = f"the request body is over {self.limit} bytes, the limit (body_bytes in GET /info)"
        length = dict(scope['headers']).get(b'content-length')
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await error(413 if length.isdigit() else 400, message if length.isdigit() else
                               "the Content-Length header is not a number")(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            event = await receive()
            received += len(event.get('body', b''))
            if received > self.limit:
                raise BodyLimit.TooLarge
            return event
        try:
            await self.app(scope, counted, send)
        except BodyLimit.TooLarge:
            await error(413, message)(scope, receive, send)


def create_app(svc, limits=None):
    """The FastAPI app serving `svc`: a service.Service, or a function making one in the process that serves
    (serve_ray.py's replica), then `limits` its Limits. Its request models carry the limits."""
    limits = limits or svc.limits

    class TurnIn(BaseModel):
        model_config = ConfigDict(extra='forbid')
        speaker: str = Field(min_length=1, max_length=limits.speaker_chars, examples=['Ann'])
        text: str = Field(min_length=1, max_length=limits.text_chars, examples=['I got the job!'])

        @field_validator('speaker', 'text')
        @classmethod
        def not_blank(cls, value):
            if not value.strip():
                raise ValueError('is only whitespace: give it some text')
            return value

    class DialogueIn(BaseModel):
        model_config = ConfigDict(extra='forbid')
        turns: list[TurnIn] = Field(min_length=1, max_length=limits.turns)

    class PredictRequest(BaseModel):
        """One dialogue (`turns`) or several (`dialogues`)."""
        model_config = ConfigDict(extra='forbid')
        turns: Optional[list[TurnIn]] = Field(None, min_length=1, max_length=limits.turns)
        dialogues: Optional[list[DialogueIn]] = Field(None, min_length=1, max_length=limits.dialogues)

        @model_validator(mode='after')
        def one_of(self):
            if (self.turns is None) == (self.dialogues is None):
                raise ValueError("give either turns (one dialogue) or dialogues (several), not both nor neither")
            return self

    class TurnOut(BaseModel):
        speaker: str
        text: str
        predicted: str
        probabilities: dict[str, float]

    class DialogueOut(BaseModel):
        turns: list[TurnOut]

    class PredictResponse(BaseModel):
        turns: Optional[list[TurnOut]] = None
        dialogues: Optional[list[DialogueOut]] = None

    class SessionTurn(TurnOut):
        final: bool = Field(description='the prediction cannot change any more (a past-only, --causal, model)')
        revised: bool = Field(description='the predicted label changed with this answer')
        previous: Optional[str] = Field(None, description='the label before, when revised')

    class SessionOut(BaseModel):
        id: str
        turns: list[SessionTurn]

    @asynccontextmanager
    async def lifespan(app):
        yield
        if isinstance(app.state.service, service.Service):
            await app.state.service.stop()

    app = FastAPI(title='MoED', lifespan=lifespan,
                  description='Emotions of the turns of conversations, from a trained MoED run (serve.py).')
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=limits.body_bytes)

    def get_service(request: Request) -> service.Service:
        """The one dependency: the loaded run, its batching queue and its sessions."""
        if not isinstance(request.app.state.service, service.Service):
            request.app.state.service = request.app.state.service()        # made where it serves, once
        return request.app.state.service

    Service = Annotated[service.Service, Depends(get_service)]

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return error(422, validation_message(exc.errors()))

    @app.exception_handler(UserError)
    async def refused(request, exc):
        return error(422, str(exc))

    @app.exception_handler(service.SessionError)
    async def session_error(request, exc):
        return error(exc.status, str(exc))

    @app.exception_handler(Exception)
    async def failed(request, exc):
        return error(500, f"internal error ({type(exc).__name__}); the server goes on serving")

    def turns_out(turns, result, names):
        labels, probabilities = result
        return [TurnOut(speaker=t.speaker, text=t.text, predicted=label, probabilities=dict(zip(names, map(float, p))))
                for t, label, p in zip(turns, labels, probabilities)]

    @app.post('/predict', response_model=PredictResponse, response_model_exclude_none=True)
    async def predict_dialogues(body: PredictRequest, svc: Service):
        """The emotion of every turn of one or several dialogues."""
        dialogues = [body.turns] if body.turns is not None else [d.turns for d in body.dialogues]
        dialogues = [[service.Turn(t.speaker, t.text) for t in d] for d in dialogues]
        results = await svc.predict(dialogues)
        out = [DialogueOut(turns=turns_out(d, r, svc.loaded.label_names)) for d, r in zip(dialogues, results)]
        return PredictResponse(turns=out[0].turns) if body.turns is not None else PredictResponse(dialogues=out)

    @app.post('/sessions', response_model=SessionOut, status_code=201)
    async def create_session(svc: Service):
        """A new conversation session (bounded in number and idle time: GET /info's limits)."""
        return SessionOut(id=svc.create_session().id, turns=[])

    @app.post('/sessions/{session_id}/turns', response_model=SessionOut)
    async def append_turn(session_id: str, turn: TurnIn, svc: Service):
        """Append a turn; the predictions of every turn so far."""
        return SessionOut(id=session_id, turns=await svc.append(session_id, service.Turn(turn.speaker, turn.text)))

    @app.get('/sessions/{session_id}', response_model=SessionOut)
    async def get_session(session_id: str, svc: Service):
        """The predictions of every turn so far."""
        return SessionOut(id=session_id, turns=svc.current(session_id))

    @app.delete('/sessions/{session_id}', status_code=204)
    async def delete_session(session_id: str, svc: Service):
        svc.delete_session(session_id)

    @app.get('/health')
    async def health(svc: Service):
        return {'status': 'ok', 'sessions': len(svc.sessions), 'batches_run': svc.batches_run, 'replicas': svc.replicas}

    @app.get('/info')
    async def info(svc: Service):
        """Labels, modalities, the recipe's encoder, the model flags, whether it is causal, the limits."""
        return service.info(svc.loaded, svc.limits)

    @app.get('/', response_class=HTMLResponse, include_in_schema=False)
    async def page():
        with open(PAGE, encoding='utf-8') as f:
            return f.read()

    return app


# ----------------------------------------------------------------------------- running it

def load_service(args):
    """The run loaded once (predict.load: exit 2 for a folder that is not a custom run or another encoder)."""
    loaded = predict.load(args.run_dir, args.text_model, args.device)
    service.refuse_media_runs(loaded)
    return loaded


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault('TQDM_DISABLE', '1')          # no progress bar per request
    loaded = load_service(args)
    if args.replicas:
        import serve_ray
        return serve_ray.run(args, loaded, limits_of(args), create_app)
    import uvicorn
    print(f"serving {args.run_dir} on http://{args.host}:{args.port}/ (OpenAPI page: /docs)", flush=True)
    uvicorn.run(create_app(service.Service(loaded, limits_of(args))), host=args.host, port=args.port,
                log_level='warning')


if __name__ == '__main__':
    sys.exit(utils.run_cli(main))
