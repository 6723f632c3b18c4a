"""A loaded `--Dataset custom` run answering many clients: requests batched together, conversation sessions.

    service = Service.in_process(prediction.load(run_dir, progress=False), Limits())   # the run loaded once
    turns = service.check_turns(request_turns, 'turns')        # the one check of a request's turns (checks.py)
    dialogues = await service.predict([turns])                 # -> per dialogue, per turn (label, probabilities)
    service.release([turns])                                   # its recordings (a run that reads them)
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

A run that reads recordings (audio or visual features) is served the same way: each turn carries its recordings
(serving/media_turns.py), whose features the check makes, into the server's own folder (a temporary one, removed
at stop), where the batch's prediction.predict_conversations finds them. A /predict request's recordings are
removed once it is answered, a session's with the session.
"""
import asyncio
import secrets
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from owndata import prediction, text_encoder
from serving import checks
from serving.media_turns import TurnMedia
from utils import UserError

MEDIA_BODY_BYTES = 100_000_000          # the body limit of a run reading recordings: minutes of video, as base64


@dataclass(frozen=True)
class Limits:
    """What one request, conversation and batch may hold (GET /info states them; a request over one is a 4xx)."""
    body_bytes: int = 1_000_000         # a request body (a run reading recordings: MEDIA_BODY_BYTES)
    recording_seconds: float = 300.0    # a turn's recording (a run reading recordings)
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


class SessionError(Exception):
    """A session request that cannot be served: status (404 unknown, 409 full, 429 too many) and a message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    id: str
    turns: list = field(default_factory=list)          # checks.Turn
    answer: list = field(default_factory=list)         # the last append's session_turns
    used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Job:
    dialogues: list                                     # lists of checks.Turn
    future: asyncio.Future

    @property
    def n_turns(self):
        return sum(len(d) for d in self.dialogues)


def predict_batch(loaded, dialogues):
    """prediction.predict_conversations' numbers for these dialogues (lists of checks.Turn) as one batch: per
    dialogue, (labels, probabilities (turns, classes))."""
    _, _, probabilities = prediction.predicted(loaded, prediction.conversations_of(dialogues), len(dialogues))
    labels = [loaded.label_names[i] for i in probabilities.argmax(1)]
    bounds = np.cumsum([0] + [len(d) for d in dialogues])
    return [(labels[a:b], probabilities[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def keep_text_features(loaded, limits):
    """The run's encoder keeps the features of the last limits.cached_turns turns it read: a session's append
    encodes only the new turn (with --context-turns, the same turn and context give the same input), and a
    turn sent again is not encoded again."""
    if loaded.encoder is not None:
        loaded.encoder.cache = text_encoder.FeatureCache(limits.cached_turns)


class Service:
    """The loaded run, its batching queue and its sessions."""

    def __init__(self, info, limits, runner, in_flight=1, replicas=0, media=None):
        """info: the run (prediction.RunInfo: labels, modalities, causal, config.json). runner: an async function
        running a batch (a list of dialogues) -> predict_batch's list. in_flight: batches run at once (one per
        model replica); replicas: how many serving/replicas.py runs (0: the model is in this process); media: the
        turns' recordings (media_turns.TurnMedia; None: a run that reads text only)."""
        self.info, self.limits, self.runner, self.in_flight, self.replicas = info, limits, runner, in_flight, replicas
        self.media = media
        self.sessions = {}
        self.queue = self.worker = self.slots = None
        self.batches_run = 0
        self.executor = self.folder = None      # in_process: the model's thread, the recordings' folder

    @classmethod
    def in_process(cls, loaded, limits):
        """The Service of a run loaded here (prediction.load): batches run in one model thread beside the event
        loop, one at a time; the encoder keeps the text features of recent turns (keep_text_features); a run that
        reads recordings gets a folder of its own for them and their features (removed at stop)."""
        keep_text_features(loaded, limits)
        folder = media = None
        if reads_recordings(loaded):
            folder = loaded.work_dir = tempfile.mkdtemp(prefix='moed-serve-')
            media = TurnMedia(loaded, limits, folder)
        executor = ThreadPoolExecutor(1, thread_name_prefix='moed')

        async def run_here(dialogues):
            return await asyncio.get_running_loop().run_in_executor(executor, predict_batch, loaded, dialogues)
        service = cls(loaded, limits, run_here, media=media)
        service.executor, service.folder = executor, folder
        return service

    # ------------------------------------------------------------------------- a request's turns (checks.py)

    def check_turns(self, turns, where):
        return checks.check_turns(turns, self.limits, where, self.media)

    def check_dialogues(self, dialogues):
        return checks.check_dialogues(dialogues, self.limits, self.media)

    def check_turn(self, turn):
        return checks.check_turn(turn, self.limits, '', self.media)

    def release(self, dialogues):
        """The recordings of a request's checked dialogues, once it is answered (or failed)."""
        checks.release(dialogues, self.media)

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
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------------- predicting, batched

    async def predict(self, dialogues):
        """Per dialogue (lists of checks.Turn: check_turns), per turn: (predicted label, probabilities array)."""
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
            self.release([self.sessions.pop(key).turns])

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
        self.release([self.sessions.pop(session_id).turns])

    async def append(self, session_id, turn):
        """Add a checked turn to a session and predict the conversation so far: session_turns' list. The turn's
        recordings are the session's from then on (removed with it), or removed now if it is not added."""
        added = False
        try:
            session = self.session(session_id)
            async with session.lock:                # one append at a time per session, in arrival order
                if len(session.turns) >= self.limits.turns:
                    raise SessionError(409, f"session {session_id} has {len(session.turns)} turns, the limit "
                                            "(turns in GET /info): start a new session")
                (labels, probabilities), = await self.predict([session.turns + [turn]])
                session.turns.append(turn)
                added = self.sessions.get(session_id) is session    # (not deleted while it was predicted)
                previous = [t['predicted'] for t in session.answer]
                session.used = time.monotonic()
                session.answer = self.session_turns(session, labels, probabilities, previous)
                return session.answer
        finally:
            if not added:
                self.release([[turn]])

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
                media=TurnMedia.describe(run_info.modalities, limits),
                encoder=dict(text_model=encoder.get('text_model'), package=encoder.get('package'),
                             sha256=recipe.get('encoder_sha256'), layers=recipe.get('layers'),
                             input=recipe.get('input')),
                model=model_flags, causal=run_info.causal, limits=asdict(limits))


def reads_recordings(run_info):
    return any(m in ('audio', 'visual') for m in run_info.modalities)


def refuse_replicated_recordings(run_info):
    """--replicas serves runs that read text only: a turn's recordings are checked, and their features made, in
    the process that holds the sessions, where the replicas (on other nodes, maybe) do not look."""
    if reads_recordings(run_info):
        raise UserError(f"{run_info.run_dir}: the run's model reads {', '.join(run_info.modalities)}; --replicas "
                        "serves runs that read text only. Serve a run trained on recordings in one process (leave out "
                        "--replicas).")
