"""Recording users' own Keras scripts: what fit was given, the model read as params, the recorded run."""
