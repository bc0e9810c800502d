"""Demo sections, one module per pattern; each registers itself with `section`."""
