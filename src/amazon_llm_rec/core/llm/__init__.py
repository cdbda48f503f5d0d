"""The LLM: model loading, prompt scoring, training (TRL, Unsloth, the group-softmax ranking loss), shards."""
