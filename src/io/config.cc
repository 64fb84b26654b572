// Implemented in the io step.
