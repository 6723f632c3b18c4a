"""serve.py --replicas N: the same app under Ray Serve, the model in N replicas.

    python serve.py RUN_DIR --replicas 2                          # a local Ray cluster, started and stopped here
    python serve.py RUN_DIR --replicas 4 --address ray://HOST:10001   # a running cluster

Two deployments: `Front`, one replica, runs serve.create_app's FastAPI app behind Ray Serve's HTTP proxy on
--host/--port: it validates requests, holds the sessions (so that every turn of a session reaches them) and
batches as service.Service does; `Model`, N replicas, each with the run loaded (prediction.load), runs the
batches (service.predict_batch), up to N at once. Every replica runs this repository's modules: they are put
on the workers' PYTHONPATH (a cluster's machines need the repository at the same path).
"""
import os
import signal
import threading
from functools import partial

import utils
from owndata import prediction
from serving import service

APP = 'moed'
HANDLE = []                 # in the Front replica: the Model deployment's handle


def front_service(run_dir, device, limits, replicas):
    """The Front replica's Service: the run's description (no model: the Model replicas have it), batches sent
    to the Model deployment, one per replica at once."""
    run = prediction.read_run(run_dir)
    loaded = prediction.LoadedRun(run_dir, run, None, None, prediction.model_modalities(run), device)
    handle = HANDLE[0]

    async def runner(dialogues):
        return await handle.predict.remote(dialogues)
    svc = service.Service(loaded, limits, runner=runner, in_flight=replicas)
    svc.replicas = replicas
    return svc


def run(args, loaded, limits, create_app):
    import ray
    from ray import serve

    app = create_app(partial(front_service, os.path.abspath(args.run_dir), args.device, limits, args.replicas),
                     limits)

    @serve.deployment(ray_actor_options={'num_cpus': 0})
    @serve.ingress(app)
    class Front:
        def __init__(self, model):
            from serving import replicas as serve_ray
            serve_ray.HANDLE[:] = [model]

    @serve.deployment(num_replicas=args.replicas, ray_actor_options={'num_cpus': 0})
    class Model:
        def __init__(self, run_dir, text_model, device):
            self.loaded = prediction.load(run_dir, text_model, device)
            service.keep_text_features(self.loaded, limits)

        def predict(self, dialogues):
            return service.predict_batch(self.loaded, dialogues)

    env = {'TQDM_DISABLE': '1'}
    if 'OMP_NUM_THREADS' in os.environ:
        env['OMP_NUM_THREADS'] = os.environ['OMP_NUM_THREADS']
    utils.start_ray(args.address, env)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        serve.start(http_options={'host': args.host, 'port': args.port})
        serve.run(Front.bind(Model.bind(os.path.abspath(args.run_dir), args.text_model, args.device)), name=APP,
                  route_prefix='/')
        print(f"serving {args.run_dir} with {args.replicas} replicas under Ray Serve on http://{args.host}:"
              f"{args.port}/ (OpenAPI page: /docs)", flush=True)
        stopped.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
