"""A loaded `--Dataset custom` run answering many clients: requests batched together, conversation sessions.

    service = Service.in_process(prediction.load(run_dir, progress=False), Limits())   # the run loaded once
    turns = check_turns(request_turns, limits, 'turns')        # the one check of a request's turns (-> Turn)
    dialogues = await service.predict([turns])                 # -> per dialogue, per turn (label, probabilities)
    session = service.create_session(); answer = await service.append(session.id, turns[0])

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

from owndata import features, prediction
from utils import UserError, visible


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


class RequestError(Exception):
    """A request's turn that breaks a rule: the field (turns.2.text, dialogues.0.turns.1.speaker) and why (a 422)."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")


def check_turns(turns, limits, where):
    """The one check of a request's turns (objects with speaker and text, as parsed from its JSON), with the
    project's rules and the limits: the model's input, a list of Turn. where: the field path of the list ('turns',
    'dialogues.1.turns')."""
    if not 1 <= len(turns) <= limits.turns:
        raise RequestError(where, f"a conversation has 1 to {limits.turns} turns (turns in GET /info), not "
                                  f"{len(turns)}")
    return [check_turn(turn, limits, f'{where}.{i}.') for i, turn in enumerate(turns)]


def check_turn(turn, limits, where=''):
    """One turn as a Turn: its speaker's name and its text need a visible character (utils.visible, the rule of a
    CSV's too) and fit the limits; where: the prefix of its fields' path ('turns.2.': 'turns.2.text')."""
    for name, most in (('speaker', limits.speaker_chars), ('text', limits.text_chars)):
        value = getattr(turn, name)
        if not visible(value):
            raise RequestError(f"{where}{name}", f"is empty (only white space or invisible characters): give the "
                                                 f"{name}")
        if len(value) > most:
            raise RequestError(f"{where}{name}", f"has {len(value)} characters, at most {most} are taken "
                                                 f"({name}_chars in GET /info)")
    return Turn(turn.speaker.strip(), turn.text)


def check_dialogues(dialogues, limits):
    """check_turns of each dialogue of a request's `dialogues` list."""
    if not 1 <= len(dialogues) <= limits.dialogues:
        raise RequestError('dialogues', f"a request holds 1 to {limits.dialogues} dialogues (dialogues in GET /info), "
                                        f"not {len(dialogues)}")
    return [check_turns(d.turns, limits, f'dialogues.{k}.turns') for k, d in enumerate(dialogues)]


class SessionError(Exception):
    """A session request that cannot be served: status (404 unknown, 409 full, 429 too many) and a message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    id: str
    turns: list = field(default_factory=list)          # Turn
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


def predict_batch(loaded, dialogues):
    """prediction.predict_conversations on these dialogues (lists of Turn) as one batch: per dialogue, (labels,
    probabilities (turns, classes))."""
    table = prediction.predict_conversations(loaded, prediction.conversations_of(dialogues), len(dialogues))
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


class Service:
    """The loaded run, its batching queue and its sessions."""

    def __init__(self, info, limits, runner, in_flight=1, replicas=0):
        """info: the run (prediction.RunInfo: labels, modalities, causal, config.json). runner: an async function
        running a batch (a list of dialogues) -> predict_batch's list. in_flight: batches run at once (one per
        model replica); replicas: how many serving/replicas.py runs (0: the model is in this process)."""
        self.info, self.limits, self.runner, self.in_flight, self.replicas = info, limits, runner, in_flight, replicas
        self.sessions = {}
        self.queue = self.worker = self.slots = None
        self.batches_run = 0
        self.executor = None                    # in_process: the model's thread

    @classmethod
    def in_process(cls, loaded, limits):
        """The Service of a run loaded here (prediction.load): batches run in one model thread beside the event
        loop, one at a time; the encoder keeps the text features of recent turns (keep_text_features)."""
        keep_text_features(loaded, limits)
        executor = ThreadPoolExecutor(1, thread_name_prefix='moed')

        async def run_here(dialogues):
            return await asyncio.get_running_loop().run_in_executor(executor, predict_batch, loaded, dialogues)
        service = cls(loaded, limits, run_here)
        service.executor = executor
        return service

    def started(self):
        """The batching worker, started in the running event loop on first use."""
        if self.worker is None:
            self.queue, self.slots = asyncio.Queue(), asyncio.Semaphore(self.in_flight)
            self.worker = asyncio.get_running_loop().create_task(self.run_batches())
        return self.queue

    async def stop(self):
        if self.worker:
            self.worker.cancel()
        if self.executor:
            self.executor.shutdown(wait=True)

    # ------------------------------------------------------------------------- predicting, batched

    async def predict(self, dialogues):
        """Per dialogue (lists of Turn, checked: check_turns), per turn: (predicted label, probabilities array)."""
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
            previous = [t['predicted'] for t in session.answer]
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
        names, final = self.info.label_names, self.info.causal
        out = []
        for i, (turn, label, p) in enumerate(zip(session.turns, labels, probabilities)):
            before = previous[i] if i < len(previous) else None
            revised = before is not None and before != label
            out.append(dict(speaker=turn.speaker, text=turn.text, predicted=label,
                            probabilities=dict(zip(names, map(float, p))), final=final, revised=revised,
                            previous=before if revised else None))
        return out


def info(run_info, limits):
    """GET /info: what the run is (a prediction.RunInfo) and what a request may hold."""
    run = run_info.run
    encoder = run['features']['modalities'].get('text', {}).get('encoder', {})
    recipe = run['features']['recipe']['modalities'].get('text', {})
    model_flags = {k: v for k, v in run['model_config'].items() if k != 'dataset'}
    return dict(run_dir=str(run_info.run_dir), labels=run_info.label_names, modalities=run_info.modalities,
                encoder=dict(text_model=encoder.get('text_model'), package=encoder.get('package'),
                             sha256=recipe.get('encoder_sha256'), layers=recipe.get('layers'),
                             input=recipe.get('input')),
                model=model_flags, causal=run_info.causal, limits=asdict(limits))


def refuse_media_runs(loaded):
    """The server takes text turns: a run whose model also reads audio or visual features cannot be served."""
    others = [m for m in loaded.modalities if m != 'text']
    if others or 'text' not in loaded.modalities:
        raise UserError(f"{loaded.run_dir}: the run's model uses {', '.join(loaded.modalities)}; serve.py takes "
                        "turns of text (speaker and text) only: serve a run trained with --modals l.")
