"""A loaded `--Dataset custom` run answering many clients: requests batched together, conversation sessions.

    service = Service(prediction.load(run_dir), Limits())      # the run loaded once (serve.py builds its app on it)
    await service.start()
    dialogues = await service.predict([[Turn('Ann', 'hi'), Turn('Bob', 'hello')]])   # -> per dialogue, per turn
    session = service.create_session(); turns = await service.append(session.id, Turn('Ann', 'hi'))

Dynamic batching: every request's dialogues go into one queue; one worker takes what is waiting (up to
Limits.batch_dialogues dialogues and Limits.batch_turns turns, waiting at most Limits.batch_wait_ms for more
once it has one) and runs them as one batch through prediction.predict_conversations, the path predict.py takes:
the text encoder, then MoED. A custom run's evaluation is batch-invariant (model.MoED.padding_free), so a
dialogue's numbers do not depend on its neighbours. The model runs in one thread beside the event loop: the
server keeps accepting requests while a batch runs. A batch that fails is run again request by request, so
one bad request cannot fail the others.

Sessions hold a conversation's turns; appending one predicts the whole conversation again (the earlier turns'
text features kept from before: keep_text_features; MoED runs over them all, with a model that
reads the future every turn can change) and marks the turns whose predicted label changed (`revised`, with the
label before). `final` is true only with a past-only model (train.py --causal): no later turn is read, so a
prediction never changes; a full model's reverse recurrent direction reads to the end of the conversation, so
none of its predictions is final while turns can still arrive. Sessions are bounded in number
(Limits.sessions: creating one more is refused, 429) and idle time (Limits.session_idle_s: dropped after).
"""
import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from owndata import conversations, features, prediction
from utils import UserError


@dataclass(frozen=True)
class Limits:
    """What one request, conversation and batch may hold (GET /info states them; a request over one is a 4xx)."""
    body_bytes: int = 1_000_000         # a request body
    dialogues: int = 32                 # dialogues in one POST /predict
    turns: int = 200                    # turns in one dialogue or session
    text_chars: int = 2000              # characters of one turn's text
    speaker_chars: int = 100            # characters of one speaker name
    batch_dialogues: int = 64           # dialogues run together
    batch_turns: int = 2048             # turns run together
    batch_wait_ms: float = 2.0          # how long the batcher waits for more once a request is there
    sessions: int = 1000                # sessions held at once
    session_idle_s: float = 900.0       # a session unused this long is dropped
    cached_turns: int = 20_000          # turns whose text features are kept for later requests (keep_text_features)


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str


class SessionError(Exception):
    """A session request that cannot be served: status (404 unknown, 409 full, 429 too many) and a message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    id: str
    turns: list = field(default_factory=list)          # Turn
    predicted: list = field(default_factory=list)      # the labels last returned, per turn
    answer: list = field(default_factory=list)         # the last append's session_turns
    used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Job:
    dialogues: list                                     # lists of Turn
    future: asyncio.Future

    @property
    def n_turns(self):
        return sum(len(d) for d in self.dialogues)


def conversation_frame(dialogues):
    """Dialogues (lists of Turn) as the plain CSV schema's rows, dialogue ids 0, 1, ..."""
    return pd.DataFrame([(str(d), t, turn.speaker, turn.text) for d, turns in enumerate(dialogues)
                         for t, turn in enumerate(turns)], columns=['dialogue', 'turn', 'speaker', 'text'])


def predict_batch(loaded, dialogues):
    """prediction.predict_conversations on these dialogues (lists of Turn) as one batch: per dialogue, (labels,
    probabilities (turns, classes))."""
    conv = conversations.read_dataframe(conversation_frame(dialogues), 'request', split='test')
    table = prediction.predict_conversations(loaded, conv, batch_size=len(dialogues))
    probabilities = table[[f'p_{name}' for name in loaded.label_names]].to_numpy()
    labels = table['predicted'].to_numpy()
    bounds = np.cumsum([0] + [len(d) for d in dialogues])
    return [(list(labels[a:b]), probabilities[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def keep_text_features(loaded, limits):
    """The run's encoder keeps the features of the last limits.cached_turns turns it read: a session's append
    encodes only the new turn (with --context-turns, the same turn and context give the same input), and a
    turn sent again is not encoded again."""
    if loaded.encoder is not None:
        loaded.encoder.cache = features.FeatureCache(limits.cached_turns)


def check_request(dialogues):
    """The rules conversations.py applies to a CSV, applied to a request's dialogues: a UserError names the
    turn (its dialogue and position in the request) that breaks one."""
    conversations.read_dataframe(conversation_frame(dialogues), 'request', split='test')


class Service:
    """The loaded run, its batching queue and its sessions."""

    def __init__(self, loaded, limits=Limits(), runner=None, in_flight=1):
        """runner: an async function running a batch (a list of dialogues) -> predict_batch's list; default
        predict_batch in this process's model thread. in_flight: batches run at once (serve.py --replicas: one
        per replica)."""
        self.loaded, self.limits = loaded, limits
        if runner is None:
            keep_text_features(loaded, limits)
        self.runner, self.in_flight = runner or self.run_here, in_flight
        self.sessions = {}
        self.queue = self.worker = self.slots = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix='moed')     # the model runs here, one batch at a time
        self.batches = []                                                   # (dialogues, turns) of recent batches
        self.batches_run = 0
        self.replicas = 0                                                   # serve_ray.py's model replicas

    async def run_here(self, dialogues):
        return await asyncio.get_running_loop().run_in_executor(self.executor, predict_batch, self.loaded, dialogues)

    def started(self):
        """The batching worker, started in the running event loop on first use."""
        if self.worker is None:
            self.queue, self.slots = asyncio.Queue(), asyncio.Semaphore(self.in_flight)
            self.worker = asyncio.get_running_loop().create_task(self.run_batches())
        return self.queue

    async def stop(self):
        if self.worker:
            self.worker.cancel()
        self.executor.shutdown(wait=True)

    # ------------------------------------------------------------------------- predicting, batched

    async def predict(self, dialogues):
        """Per dialogue (lists of Turn), per turn: (predicted label, probabilities array). A UserError for a
        dialogue that conversations.py's rules refuse."""
        check_request(dialogues)
        queue = self.started()
        future = asyncio.get_running_loop().create_future()
        await queue.put(Job(dialogues, future))
        return await future

    async def run_batches(self):
        while True:
            await self.slots.acquire()         # a free slot first: what arrives while batches run joins the next
            jobs = await self.next_batch()
            asyncio.get_running_loop().create_task(self.run_jobs(jobs))

    async def run_jobs(self, jobs):
        """One batch of jobs; if it fails, each job alone, so that an error reaches only the job that caused it."""
        try:
            dialogues = [d for job in jobs for d in job.dialogues]
            self.batches.append((len(dialogues), sum(map(len, dialogues))))
            del self.batches[:-1000]
            self.batches_run += 1
            try:
                results = await self.runner(dialogues)
            except Exception:
                if len(jobs) > 1:
                    for job in jobs:
                        await self.run_alone(job)
                    return
                raise
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(results[start:start + len(job.dialogues)])
                start += len(job.dialogues)
        except Exception as error:     # noqa: BLE001 - handed to the request that caused it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
        finally:
            self.slots.release()

    async def run_alone(self, job):
        try:
            result = await self.runner(job.dialogues)
        except Exception as error:     # noqa: BLE001 - handed to the request that caused it
            if not job.future.done():
                job.future.set_exception(error)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def next_batch(self):
        """The jobs waiting, up to the batch bounds: the first job always, more while they fit, waiting at most
        batch_wait_ms for them."""
        limits = self.limits
        jobs = [await self.queue.get()]
        n_dialogues, n_turns = len(jobs[0].dialogues), jobs[0].n_turns
        deadline = time.monotonic() + limits.batch_wait_ms / 1000
        while n_dialogues < limits.batch_dialogues and n_turns < limits.batch_turns:
            if self.queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            if n_dialogues + len(job.dialogues) > limits.batch_dialogues or n_turns + job.n_turns > limits.batch_turns:
                self.queue.put_nowait(job)          # for the next batch (the queue's order is not a promise)
                break
            jobs.append(job)
            n_dialogues, n_turns = n_dialogues + len(job.dialogues), n_turns + job.n_turns
        return jobs

    # ------------------------------------------------------------------------- sessions

    def expire_sessions(self):
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.used > self.limits.session_idle_s]:
            del self.sessions[key]

    def create_session(self):
        self.expire_sessions()
        if len(self.sessions) >= self.limits.sessions:
            raise SessionError(429, f"the server holds {self.limits.sessions} sessions, its limit (sessions in GET "
                                    f"/info): delete one (DELETE /sessions/ID) or wait for one to be idle "
                                    f"{self.limits.session_idle_s:g} s (session_idle_s)")
        session = Session(secrets.token_urlsafe(12))
        self.sessions[session.id] = session
        return session

    def session(self, session_id):
        self.expire_sessions()
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionError(404, f"no session {session_id!r}: it was never created, was deleted, or was idle "
                                    f"longer than {self.limits.session_idle_s:g} s (session_idle_s in GET /info)")
        session.used = time.monotonic()
        return session

    def delete_session(self, session_id):
        self.session(session_id)
        del self.sessions[session_id]

    async def append(self, session_id, turn):
        """Add a turn to a session and predict the conversation so far: session_turns' list."""
        session = self.session(session_id)
        async with session.lock:                    # one append at a time per session, in arrival order
            if len(session.turns) >= self.limits.turns:
                raise SessionError(409, f"session {session_id} has {len(session.turns)} turns, the limit (turns in "
                                        "GET /info): start a new session")
            (labels, probabilities), = await self.predict([session.turns + [turn]])
            session.turns.append(turn)
            previous, session.predicted = session.predicted, labels
            session.used = time.monotonic()
            session.answer = self.session_turns(session, labels, probabilities, previous)
            return session.answer

    def current(self, session_id):
        """The predictions of every turn of a session so far, as the last append gave them (none revised:
        nothing arrived since)."""
        session = self.session(session_id)
        return [dict(turn, revised=False, previous=None) for turn in session.answer]

    def session_turns(self, session, labels, probabilities, previous):
        """Per turn: speaker, text, predicted, probabilities, final, revised (its label changed with this
        answer) and previous (the label before, when revised)."""
        names, final = self.loaded.label_names, self.loaded.causal
        out = []
        for i, (turn, label, p) in enumerate(zip(session.turns, labels, probabilities)):
            before = previous[i] if i < len(previous) else None
            revised = before is not None and before != label
            out.append(dict(speaker=turn.speaker, text=turn.text, predicted=label,
                            probabilities=dict(zip(names, map(float, p))), final=final, revised=revised,
                            previous=before if revised else None))
        return out


def info(loaded, limits):
    """GET /info: what the run is and what a request may hold."""
    run = loaded.run
    encoder = run['features']['modalities'].get('text', {}).get('encoder', {})
    recipe = run['features']['recipe']['modalities'].get('text', {})
    model_flags = {k: v for k, v in run['model_config'].items() if k != 'dataset'}
    return dict(run_dir=str(loaded.run_dir), labels=loaded.label_names, modalities=loaded.modalities,
                encoder=dict(text_model=encoder.get('text_model'), package=encoder.get('package'),
                             sha256=recipe.get('encoder_sha256'), layers=recipe.get('layers'),
                             input=recipe.get('input')),
                model=model_flags, causal=loaded.causal, limits=asdict(limits))


def refuse_media_runs(loaded):
    """The server takes text turns: a run whose model also reads audio or visual features cannot be served."""
    others = [m for m in loaded.modalities if m != 'text']
    if others or 'text' not in loaded.modalities:
        raise UserError(f"{loaded.run_dir}: the run's model uses {', '.join(loaded.modalities)}; serve.py takes "
                        "turns of text (speaker and text) only: serve a run trained with --modals l.")
