"""Train MoED on CMU-MOSEI (7 sentiment bins): the original README's MOSEI command; the code is train.py's.

    python train_MOSEI.py --paper            # = python train.py --paper --Dataset MOSEI
"""
import train

if __name__ == '__main__':
    train.cli(default_dataset='MOSEI')
