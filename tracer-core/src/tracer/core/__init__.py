"""The run: `TrainingTracer`, its writer and its process-level safety nets."""
