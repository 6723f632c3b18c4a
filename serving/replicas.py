"""serve.py --replicas N: the same app under Ray Serve, the model in N replicas.

    python serve.py RUN_DIR --replicas 2                          # a local Ray cluster, started and stopped here
    python serve.py RUN_DIR --replicas 4 --address ray://HOST:10001   # a running cluster

Two deployments: `Front`, one replica, runs serving/api.py's FastAPI app behind Ray Serve's HTTP proxy on
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
from serving import api, service

APP, MODEL = 'moed', 'Model'     # the Ray Serve application and its model deployment


def front_service(run_dir, limits, replicas):
    """The Front replica's Service: the run's description (prediction.describe: the Model replicas hold the
    model), batches sent to the Model deployment (found by its name), one per replica at once."""
    from ray import serve
    handle = serve.get_deployment_handle(MODEL, app_name=APP)

    async def runner(dialogues):
        return await handle.predict.remote(dialogues)
    return service.Service(prediction.describe(run_dir), limits, runner, in_flight=replicas, replicas=replicas)


def run(args, limits):
    import ray
    from ray import serve

    run_dir = os.path.abspath(args.run_dir)
    app = api.create_app(partial(front_service, run_dir, limits, args.replicas), limits)

    @serve.deployment(ray_actor_options={'num_cpus': 0})
    @serve.ingress(app)
    class Front:
        def __init__(self, model):
            self.model = model          # bound so that the Model deployment runs; front_service finds it by name

    @serve.deployment(name=MODEL, num_replicas=args.replicas, ray_actor_options={'num_cpus': 0})
    class Model:
        def __init__(self, run_dir, text_model, device):
            self.loaded = prediction.load(run_dir, text_model, device, progress=False)
            service.keep_text_features(self.loaded, limits)

        def predict(self, dialogues):
            return service.predict_batch(self.loaded, dialogues)

    env = {'OMP_NUM_THREADS': os.environ['OMP_NUM_THREADS']} if 'OMP_NUM_THREADS' in os.environ else {}
    utils.start_ray(args.address, env)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        serve.start(http_options={'host': args.host, 'port': args.port})
        serve.run(Front.bind(Model.bind(run_dir, args.text_model, args.device)), name=APP,
                  route_prefix='/')
        print(f"serving {args.run_dir} with {args.replicas} replicas under Ray Serve on http://{args.host}:"
              f"{args.port}/ (OpenAPI page: /docs)", flush=True)
        stopped.wait()
    finally:
        serve.shutdown()
        ray.shutdown()
