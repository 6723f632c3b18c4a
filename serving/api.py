"""The FastAPI app of a served run (serve.py): its request and response models, routes, error shape and body
limit; one dependency holds the loaded run (service.Service).

    app = create_app(service.Service(prediction.load(run_dir), service.Limits()))
"""
import os
from contextlib import asynccontextmanager
from typing import Annotated, Optional

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving import service
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


def create_app(svc, limits=None):
    """The FastAPI app serving `svc`: a service.Service, or a function making one in the process that serves
    (serving/replicas.py's Front replica), then `limits` its Limits. Its request models carry the limits."""
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
