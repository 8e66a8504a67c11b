"""Training of the plate recogniser (#15): synthetic plates (``synth``), the CRNN and its
training loop (``train``), evaluation on labelled crops (``evaluate``). Training only: the
runtime (``edge/``) never imports this package; it loads the exported ONNX file."""
