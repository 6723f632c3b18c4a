"""A served turn's recordings (a run trained on audio or visual features): from a request's base64 to a file,
checked, and its features made at once with the run's recorded recipe, as predict.py makes them.

    media = TurnMedia(loaded, limits, folder)         # a run that reads audio or visual features
    fields = media.check(turn, 'turns.2.')            # {'audio': path, 'video': path, 'start', 'end'}, or
                                                      # checks.RequestError naming turns.2.audio / turns.2.video
    media.release(fields)                             # the turn's files, once no request or session holds it

What a turn carries, for the run's modalities (GET /info's `media`, `needs`):
- a run with visual features needs `video`: its frames give the faces, its sound the audio (unless `audio` is
  given too), as a CSV's video column does;
- a run with audio but no visual features needs `audio`, or `video` whose sound is taken;
- `start` / `end` (seconds, optional) cut the turn's segment from its recording, as a CSV's start / end columns.
Each recording is base64 (standard alphabet; a data URL's `data:...;base64,` prefix is accepted: a browser's
FileReader gives one) of any file FFmpeg reads: wav, mp3, mp4, webm (a browser's MediaRecorder), ...

The check, once per turn at the trust boundary (the request's thread, off the event loop): the base64 decoded,
the file written under `folder/turns`, probed (owndata/media.py: a recording, the streams the run needs, the
segment inside it, at most Limits.recording_seconds long), then its features computed by the workers' own
function (owndata/media_jobs.py's `one`: media_features.utterance_features with the run's spec) into the run's
per-utterance cache (`folder/media`, media_jobs' cache, keyed by the recording's sha256, the segment and the
recipe). The batch then reads them from there through prediction.predict_conversations, predict.py's path: the
features, the recipe check and the model are predict.py's, so the labels are. A session's earlier turns are
cached, so an append decodes only its new turn. The feature work holds one lock: openSMILE's and OpenCV's
objects are shared by the process, and the model has its own thread beside it.
"""
import base64
import binascii
import os
import re
import threading
import uuid

from owndata import features, media, media_features, media_jobs
from serving.checks import RequestError
from utils import UserError

# a data URL's prefix: its type's parameters may hold a comma (MediaRecorder's video/webm;codecs=vp8,opus)
DATA_URL = re.compile(r'^data:[^;,]{0,100}(?:;[^;]{0,100})*?;base64,', re.IGNORECASE)


class TurnMedia:
    """The recordings a run's turns carry: which fields, checked how, their features made with the run's recipe."""

    def __init__(self, loaded, limits, folder):
        """loaded: prediction.LoadedRun reading audio or visual features; folder: the server's own (removed at stop)."""
        self.limits, self.folder = limits, folder
        self.kinds = [m for m in loaded.modalities if m in ('audio', 'visual')]
        recorded = loaded.run['features']['recipe']['modalities']
        if 'visual' in self.kinds and 'source' in recorded['visual']:
            raise UserError(f"{loaded.run_dir}: the run's visual features are the .npy vectors its CSVs gave "
                            f"({recorded['visual']['source']}); a served turn carries recordings, from which those "
                            "cannot be made. Serve a run whose visual features come from videos, or predict with "
                            "predict.py.")
        self.needs = 'video' if 'visual' in self.kinds else 'audio'
        settings = features.ExtractionSettings.from_recipe(recorded, loaded.device, workers=1, progress=False)
        self.specs = {kind: features.media_spec(kind, settings) for kind in self.kinds}
        self.recipes = {kind: media_features.media_recipe(kind, spec) for kind, spec in self.specs.items()}
        self.cache_dir = os.path.join(folder, 'media')    # = extract_media's, with loaded.work_dir = folder
        self.turns_dir = os.path.join(folder, 'turns')
        os.makedirs(self.turns_dir, exist_ok=True)
        self.lock = threading.Lock()

    @staticmethod
    def describe(modalities, limits):
        """GET /info's `media`: the field each turn needs (None: text only), the fields taken, the limits."""
        needs = 'video' if 'visual' in modalities else 'audio' if 'audio' in modalities else None
        return dict(needs=needs, fields=['audio', 'video', 'start', 'end'] if needs else [],
                    recording_seconds=limits.recording_seconds if needs else None,
                    body_bytes=limits.body_bytes)

    # ------------------------------------------------------------------------- one turn

    def check(self, turn, where):
        """{'audio': path or None, 'video': path or None, 'start', 'end'} of a turn (a TurnIn), its features
        cached; a RequestError naming the field when its recording cannot give them (its files removed)."""
        audio, video = turn.audio, turn.video
        if self.needs == 'video' and video is None:
            raise RequestError(f'{where}video', "is missing: this run reads the faces of each turn (GET /info "
                                                     "media.needs): give the turn's recording, base64 of a video file")
        if 'audio' not in self.kinds and audio is not None:
            raise RequestError(f'{where}audio', "is not read by this run, whose model has no audio features "
                                                     "(GET /info media.needs): leave it out")
        if 'audio' in self.kinds and audio is None and video is None:
            raise RequestError(f'{where}audio', "is missing: this run reads the sound of each turn (GET /info "
                                                     "media.needs): give base64 of an audio or video file in audio "
                                                     "(or video, whose sound is taken)")
        paths = {}
        try:
            for name, data in (('video', video), ('audio', audio)):
                if data is not None:
                    paths[name] = self.written(data, f'{where}{name}')
            fields = dict(video=paths.get('video'), audio=paths.get('audio') or paths.get('video'),
                          start=turn.start, end=turn.end)
            if 'audio' in self.kinds:
                self.features('audio', fields['audio'], f"{where}{'audio' if 'audio' in paths else 'video'}", fields)
            if 'visual' in self.kinds:
                self.features('visual', fields['video'], f'{where}video', fields)
            return fields
        except BaseException:
            self.release(paths)
            raise

    def written(self, data, field):
        """The recording of a base64 field, written to a file of its own: its path."""
        text = DATA_URL.sub('', data, count=1)
        try:
            content = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(field, "is not base64 (the standard alphabet, A-Z a-z 0-9 + /, padded with =; "
                                           "a data URL's 'data:...;base64,' prefix is accepted)") from None
        if not content:
            raise RequestError(field, "is empty: give the turn's recording, base64 of an audio or video file")
        path = os.path.join(self.turns_dir, uuid.uuid4().hex)
        with open(path, 'wb') as f:
            f.write(content)
        return path

    def features(self, kind, path, field, fields):
        """The recording at path checked for kind's stream over the turn's segment, kind's features cached."""
        start, end = fields['start'], fields['end']
        stream = 'audio' if kind == 'audio' else 'video'
        try:
            info = media.probe(path)
        except media.MediaError as err:
            raise RequestError(field, f"is not a recording: it {err}") from None
        if info.duration > self.limits.recording_seconds:
            raise RequestError(field, f"is a {info.duration:.1f} s recording; at most "
                                           f"{self.limits.recording_seconds:g} s are taken (recording_seconds in "
                                           "GET /info): send the turn's own clip")
        problem = media.segment_problem(info, start, end, audio=stream == 'audio', video=stream == 'video')
        if problem is None and stream == 'audio' and start is None and end is None and info.audio[1] <= info.audio[0]:
            problem = 'holds no samples'
        if problem is None:
            sha256 = features.hashed(path, *features.stat_of(path))
            with self.lock:
                problem = media_jobs.one(kind, self.specs[kind], self.recipes[kind], (path, start, end), sha256,
                                         self.cache_dir)
        if problem:
            raise RequestError(field, f"cannot give the turn's {kind} features: {problem}")

    def release(self, fields):
        """Remove a turn's recordings (its features stay cached)."""
        for path in {fields.get('audio'), fields.get('video')} - {None}:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
