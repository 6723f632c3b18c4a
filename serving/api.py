"""The FastAPI app of a served run (serve.py): its request and response models, routes, error shape and body
limit; one dependency holds the loaded run (service.Service).

    limits = service.Limits()
    app = create_app(lambda: service.Service.in_process(prediction.load(run_dir, progress=False), limits), limits)

A request's JSON is parsed into the models below (its shape: fields, types, nothing unknown); its turns are then
checked once, with the project's rules and the limits, by serving/checks.py (through the Service, which holds
the run's TurnMedia: a turn's recordings decoded, probed and their features made), off the event loop, and
become the model's input. Every error is `{"error": "..."}` with a 4xx (5xx: a fault of the server), the field named
(`turns.2.text: ...`).
"""
import os
from contextlib import asynccontextmanager
from typing import Annotated, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException

from serving import checks, service
from utils import UserError

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page.html')


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


class TurnIn(BaseModel):
    """A turn as a client sends it; a run trained on recordings takes each turn's too (GET /info's media)."""
    model_config = ConfigDict(extra='forbid')
    speaker: str = Field(examples=['Ann'])
    text: str = Field(examples=['I got the job!'])
    audio: Optional[str] = Field(None, description="base64 of the turn's audio (or video) file: a run reading audio")
    video: Optional[str] = Field(None, description="base64 of the turn's video file: a run reading faces (its sound "
                                                   "is the audio unless `audio` is given)")
    start: Optional[float] = Field(None, ge=0, allow_inf_nan=False, description='seconds: the turn starts there in '
                                                                                'its recording (default its start)')
    end: Optional[float] = Field(None, gt=0, allow_inf_nan=False, description='seconds: the turn ends there in its '
                                                                              'recording (default its end)')


class DialogueIn(BaseModel):
    model_config = ConfigDict(extra='forbid')
    turns: list[TurnIn]


class PredictRequest(BaseModel):
    """One dialogue (`turns`) or several (`dialogues`)."""
    model_config = ConfigDict(extra='forbid')
    turns: Optional[list[TurnIn]] = None
    dialogues: Optional[list[DialogueIn]] = None

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


def get_service(request: Request) -> service.Service:
    """The one dependency: the served run, its batching queue and its sessions, made on first use in the process
    that serves (create_app's make_service)."""
    state = request.app.state
    if state.service is None:
        state.service = state.make_service()
    return state.service


Served = Annotated[service.Service, Depends(get_service)]


def turns_out(turns, result, names):
    labels, probabilities = result
    return [TurnOut(speaker=t.speaker, text=t.text, predicted=label, probabilities=dict(zip(names, map(float, p))))
            for t, label, p in zip(turns, labels, probabilities)]


async def predict_dialogues(body: PredictRequest, svc: Served):
    """The emotion of every turn of one or several dialogues."""
    if body.turns is not None:
        dialogues = [await run_in_threadpool(svc.check_turns, body.turns, 'turns')]
    else:
        dialogues = await run_in_threadpool(svc.check_dialogues, body.dialogues)
    try:
        results = await svc.predict(dialogues)
    finally:
        svc.release(dialogues)
    out = [DialogueOut(turns=turns_out(d, r, svc.info.label_names)) for d, r in zip(dialogues, results)]
    return PredictResponse(turns=out[0].turns) if body.turns is not None else PredictResponse(dialogues=out)


async def create_session(svc: Served):
    """A new conversation session (bounded in number and idle time: GET /info's limits)."""
    return SessionOut(id=svc.create_session().id, turns=[])


async def append_turn(session_id: str, turn: TurnIn, svc: Served):
    """Append a turn; the predictions of every turn so far."""
    checked = await run_in_threadpool(svc.check_turn, turn)
    return SessionOut(id=session_id, turns=await svc.append(session_id, checked))


async def get_session(session_id: str, svc: Served):
    """The predictions of every turn so far."""
    return SessionOut(id=session_id, turns=svc.current(session_id))


async def delete_session(session_id: str, svc: Served):
    svc.delete_session(session_id)


async def health(svc: Served):
    return {'status': 'ok', 'sessions': len(svc.sessions), 'batches_run': svc.batches_run, 'replicas': svc.replicas}


async def run_info(svc: Served):
    """Labels, modalities, the recipe's encoder, the model flags, whether it is causal, the limits."""
    return service.info(svc.info, svc.limits)


async def page():
    with open(PAGE, encoding='utf-8') as f:
        return f.read()


ERRORS = {  # exception -> (status of the answer, its message)
    RequestValidationError: lambda exc: (422, validation_message(exc.errors())),
    checks.RequestError: lambda exc: (422, str(exc)),
    UserError: lambda exc: (422, str(exc)),
    service.SessionError: lambda exc: (exc.status, str(exc)),
    HTTPException: lambda exc: (exc.status_code, f"{exc.detail}: see GET /docs for the endpoints and their bodies"),
    Exception: lambda exc: (500, f"internal error ({type(exc).__name__}); the server goes on serving"),
}


def create_app(make_service, limits):
    """The FastAPI app serving the Service that make_service() makes, on first use, in the process that serves
    (serving/replicas.py's front end makes it there); limits: that Service's, for the body limit."""
    @asynccontextmanager
    async def lifespan(app):
        yield
        if app.state.service is not None:
            await app.state.service.stop()

    app = FastAPI(title='MoED', lifespan=lifespan,
                  description='Emotions of the turns of conversations, from a trained MoED run (serve.py).')
    app.state.service, app.state.make_service = None, make_service
    app.add_middleware(BodyLimit, limit=limits.body_bytes)
    for kind, answer in ERRORS.items():
        app.add_exception_handler(kind, lambda request, exc, answer=answer: error(*answer(exc)))
    app.post('/predict', response_model=PredictResponse, response_model_exclude_none=True)(predict_dialogues)
    app.post('/sessions', response_model=SessionOut, status_code=201)(create_session)
    app.post('/sessions/{session_id}/turns', response_model=SessionOut)(append_turn)
    app.get('/sessions/{session_id}', response_model=SessionOut)(get_session)
    app.delete('/sessions/{session_id}', status_code=204)(delete_session)
    app.get('/health')(health)
    app.get('/info')(run_info)
    app.get('/', response_class=HTMLResponse, include_in_schema=False)(page)
    return app
