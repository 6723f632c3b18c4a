"""Your own conversations in: conversation CSVs and meeting transcripts read and checked, recordings decoded, text,
audio and visual features extracted (the text encoder fine-tuned first), and predictions of a trained run."""
