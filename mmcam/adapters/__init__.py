"""Task adapters: turn a task's model, inputs and outputs into targets and a layer for the engine."""
