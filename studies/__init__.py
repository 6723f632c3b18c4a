"""Tables over seeds: experiments.py's trials as train.py processes, here or on a Ray cluster."""
