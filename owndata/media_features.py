"""Audio and visual features of one utterance's segment of a recording (owndata/media.py decodes it): the function
each worker runs (owndata/media_jobs.py), and the recipes that record what the features depend on.

    spec = audio_spec(settings)                     # or visual_spec(settings): what the worker needs, picklable
    recipe = media_recipe('audio', spec)            # the same, with the models' sha256, as dataset.json records it
    vector, info = utterance_features('audio', spec, (path, start, end))

Audio, decoded to mono 16 kHz float samples (media.decode_audio):
- default: openSMILE functionals of the samples (opensmile's process_signal; --audio-features, default
  eGeMAPSv02: 88 values), as for wav files before;
- --audio-model NAME_OR_DIR: a Hugging Face speech encoder (wav2vec 2.0, HuBERT, WavLM: AutoFeatureExtractor
  and AutoModel), its hidden states (--audio-layers, default every transformer layer) each averaged over time,
  then averaged over the layers: one hidden-size vector. The whole segment is one input.
Visual, frames sampled at --fps (media.decode_frames; default 2 per second):
- faces: OpenCV's Haar cascade haarcascade_frontalface_default.xml (inside the opencv-python-headless wheel) on
  each frame scaled to DETECTION_SIDE pixels on its longer side; the largest face is cropped from the frame;
- default descriptor: HOG of the crop made grey, 64 x 64, histogram-equalised (9 orientations, 16-pixel cells,
  2 x 2-cell blocks, stride 16: 324 values). The gradients of mouth, brows and eyes on a normalised face are
  the classic expression descriptor (OpenFace's action units are read from HOG of aligned faces), need no
  download and cost about a millisecond per face;
- --visual-model NAME_OR_DIR: a Hugging Face image model (AutoImageProcessor and AutoModel: a facial-expression
  ViT, CLIP's vision tower) on the crops of one utterance as one batch; its pooler output (the mean of the last
  hidden states when it has none);
- the utterance's vector: the mean and the standard deviation over the frames with a face, then the share of
  frames with a face (one value); an utterance without any face gets zeros (share 0), and is counted.
"""
import functools
import os

import av
import cv2
import numpy as np
import opensmile
import torch
import transformers

from owndata import media
from utils import UserError, file_sha256, weights_sha256

DEFAULT_AUDIO_FEATURES = 'eGeMAPSv02'
DEFAULT_FPS = 2.0
CASCADE = 'haarcascade_frontalface_default.xml'
DETECTION_SIDE = 240            # frames are scaled to this longer side for the detector (crops: full size)
DETECTOR = {'cascade': CASCADE, 'opencv': cv2.__version__, 'scale_factor': 1.2, 'min_neighbors': 5,
            'min_face': f'1/8 of the shorter side, on the frame scaled to {DETECTION_SIDE} px on its longer side',
            'face': 'the largest box'}
CROP = 64
HOG = cv2.HOGDescriptor((CROP, CROP), (32, 32), (16, 16), (16, 16), 9)
DESCRIPTOR = (f'HOG of the face crop, grey, {CROP}x{CROP} (INTER_AREA), histogram-equalised: 9 orientations, '
              '16-px cells, 2x2-cell blocks, stride 16 (324 values)')
FRAME_POOLING = ('mean and standard deviation over the frames with a face, then the share of frames with a face; '
                 'zeros when no frame has one')
AUDIO_POOLING = 'each chosen hidden state averaged over time, then averaged over the chosen layers'


CASCADE_SHA256 = file_sha256(os.path.join(cv2.data.haarcascades, CASCADE))
cv2.setNumThreads(1)        # no OpenCV thread pool, here or in the processes forked from here
#                             (owndata/media_jobs.py): a pool inherited by a fork hangs the child; the workers are
#                             the parallelism


# ----------------------------------------------------------------------------- specs and recipes

def audio_spec(settings):
    """What the audio worker needs (settings: features.ExtractionSettings, or extract_features.py's flags)."""
    if settings.audio_model:
        return {'model': model_path(settings.audio_model), 'layers': settings.audio_layers}
    return {'feature_set': settings.audio_features or DEFAULT_AUDIO_FEATURES}


def visual_spec(settings):
    spec = {'fps': float(settings.fps or DEFAULT_FPS)}
    if settings.visual_model:
        spec['model'] = model_path(settings.visual_model)
    return spec


def model_path(name):
    """A local folder by its absolute path (the workers and predict.py may run elsewhere), a hub id as it is."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def media_recipe(kind, spec):
    """The recipe of kind's features (without the media files' hashes, which the caller adds)."""
    recipe = {'decoder': media.DECODER}
    if kind == 'audio' and 'model' not in spec:
        return {**recipe, 'extractor': f'opensmile {opensmile.__version__}', 'feature_set': spec['feature_set'],
                'feature_level': 'Functionals'}
    if kind == 'visual':
        recipe.update(fps=spec['fps'], detector={**DETECTOR, 'sha256': CASCADE_SHA256}, pooling=FRAME_POOLING)
        if 'model' not in spec:
            return {**recipe, 'descriptor': DESCRIPTOR}
    model = loaded(kind, spec)
    recipe.update(model=spec['model'], model_class=type(model.model).__name__, model_sha256=model.sha256)
    if kind == 'audio':
        recipe.update(layers=model.layers, pooling=AUDIO_POOLING)
    return recipe


# ----------------------------------------------------------------------------- Hugging Face models

class HFModel:
    """A speech or image model (in eval mode, float32, CPU) with its processor and the sha256 of both; layers: the
    speech model's hidden states averaged (--audio-layers)."""

    def __init__(self, kind, name, layers=None):
        processor_class = transformers.AutoFeatureExtractor if kind == 'audio' else transformers.AutoImageProcessor
        flag = f'--{kind}-model'
        self.processor, self.model = load_pretrained(name, processor_class)
        if self.model is None:
            raise UserError(f"{flag} {name} cannot be loaded: it is not a folder holding a complete Hugging Face "
                            f"{'speech' if kind == 'audio' else 'image'} model (config.json, weights and the "
                            f"{'feature extractor' if kind == 'audio' else 'image processor'}'s config), nor a "
                            "model of the local Hugging Face cache, and it could not be downloaded (offline?).")
        self.model.eval()
        self.sha256 = weights_sha256(self.model, self.processor.to_json_string())
        self.layers = None
        if kind == 'audio':
            n = self.model.config.num_hidden_layers + 1
            # averaged: a set of layers (sorted, each once), default every transformer layer
            self.layers = (list(range(1, n)) if layers is None else
                           sorted(set(hidden_state_indices('--audio-layers', layers, f'{flag} {name}', n,
                                                           '0 is the feature projection'))))


def load_pretrained(name, processor_class=None):
    """(processor, model) of the Hugging Face model name, float32: a folder, or a hub id from the local Hugging Face
    cache, or else downloaded (a hub id only: a path is never looked up online); (None, None) when none of these
    works. processor: the tokenizer, or processor_class's (a speech feature extractor, an image processor)."""
    transformers.utils.logging.disable_progress_bar()      # its "Loading weights" bar: the bars are ours
    processor_class = processor_class or transformers.AutoTokenizer
    is_path = os.path.isdir(name) or os.path.isabs(name) or name.startswith(('.', '~')) or os.path.exists(name)
    for local_files_only in (True,) if is_path else (True, False):
        try:
            return (processor_class.from_pretrained(name, local_files_only=local_files_only),
                    transformers.AutoModel.from_pretrained(name, local_files_only=local_files_only,
                                                           dtype=torch.float32))
        except (OSError, ValueError, KeyError):
            pass
    return None, None


def hidden_state_indices(flag, layers, model, n, zero):
    """flag's layers as non-negative hidden_states indices, in the order given, repeats kept; checked against
    the model's n hidden states (model: how to name it; zero: what index 0 is) with a UserError."""
    bad = [layer for layer in layers if not -n <= layer < n]
    if bad:
        raise UserError(f"{flag} {','.join(map(str, layers))}: {model} has {n} hidden states ({zero}), so valid "
                        f"indices are {-n}..{n - 1}; {bad[0]} is not.")
    return [layer % n for layer in layers]


@functools.cache
def hf_model(kind, name, layers=None):
    """HFModel, once per process (a worker loads a model once); layers: a tuple."""
    return HFModel(kind, name, layers)


def loaded(kind, spec):
    """The HFModel of a spec (audio_spec, visual_spec)."""
    layers = spec.get('layers')
    return hf_model(kind, spec['model'], None if layers is None else tuple(layers))


# ----------------------------------------------------------------------------- per utterance

@functools.cache
def smile(feature_set):
    """openSMILE's functionals of feature_set, once per process."""
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel.Functionals)


def audio_vector(spec, samples):
    if 'model' not in spec:
        return smile(spec['feature_set']).process_signal(samples, media.SAMPLE_RATE).to_numpy(np.float32)[0]
    model = loaded('audio', spec)
    inputs = model.processor(samples, sampling_rate=media.SAMPLE_RATE, return_tensors='pt')
    with torch.inference_mode():
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states
    return torch.stack([hidden[layer][0].mean(0) for layer in model.layers]).mean(0).numpy().astype(np.float32)


@functools.cache
def face_detector():
    """OpenCV's Haar cascade CASCADE, once per process."""
    return cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CASCADE))


def largest_face(frame):
    """The largest face's crop of an RGB frame (full resolution), or None."""
    height, width = frame.shape[:2]
    scale = DETECTION_SIDE / max(height, width)
    small = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    side = min(grey.shape) // 8
    boxes = face_detector().detectMultiScale(grey, scaleFactor=DETECTOR['scale_factor'],
                                             minNeighbors=DETECTOR['min_neighbors'], minSize=(side, side))
    if len(boxes) == 0:
        return None
    x, y, w, h = (v / scale for v in max(boxes, key=lambda b: (b[2] * b[3], tuple(b))))
    x0, y0 = max(0, round(x)), max(0, round(y))
    return frame[y0:min(height, round(y + h)), x0:min(width, round(x + w))]


def hog(crop):
    grey = cv2.cvtColor(cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return HOG.compute(cv2.equalizeHist(grey)).reshape(-1)


def frame_descriptors(spec, crops):
    """(n_faces, D) per-face descriptors of one utterance's crops."""
    if 'model' not in spec:
        return np.stack([hog(crop) for crop in crops])
    model = loaded('visual', spec)
    inputs = model.processor(images=list(crops), return_tensors='pt')
    with torch.inference_mode():
        out = model.model(**inputs)
    pooled = getattr(out, 'pooler_output', None)
    return (pooled if pooled is not None else out.last_hidden_state.mean(1)).numpy()


def descriptor_dim(spec):
    if 'model' not in spec:
        return HOG.getDescriptorSize()
    model = loaded('visual', spec).model
    return getattr(model.config, 'hidden_size', None) or model.config.vision_config.hidden_size


def visual_vector(spec, frames):
    """(vector, info): mean, std and face share of one utterance's frames; info counts frames and faces."""
    crops = [crop for crop in map(largest_face, frames) if crop is not None and crop.size]
    info = {'frames': len(frames), 'faces': len(crops)}
    if not crops:
        return np.zeros(2 * descriptor_dim(spec) + 1, np.float32), info
    per_frame = frame_descriptors(spec, crops).astype(np.float64)
    vector = np.concatenate([per_frame.mean(0), per_frame.std(0), [len(crops) / len(frames)]])
    return vector.astype(np.float32), info


def utterance_features(kind, spec, source):
    """(float32 vector, info) of one utterance: source is (path, start, end); a MediaError when decoding fails or
    the segment turns out empty."""
    path, start, end = source
    try:
        if kind == 'audio':
            samples = media.decode_audio(path, start, end)
            if len(samples) < media.SAMPLE_RATE * media.MIN_SEGMENT:
                raise media.MediaError(f'the segment holds {len(samples)} audio samples: nothing to hear')
            return audio_vector(spec, samples), {}
        frames = media.decode_frames(path, start, end, spec['fps'])
        if not frames:
            raise media.MediaError('the segment holds no video frame')
        return visual_vector(spec, frames)
    except (av.FFmpegError, EOFError) as err:
        raise media.MediaError(f'could not be decoded ({err})') from None
