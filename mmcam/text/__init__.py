"""Language side of explanations: words of captions and questions (and, later, neuron names and sentences)."""
