"""Language side of explanations: words of captions and questions (and, later, neuron names and sentences)."""

WORD_CHOICES = ("all", "content")  # which caption words to explain: every word, or nouns and adjectives
