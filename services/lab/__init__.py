"""Network lab (8010): emulates the CNC and PCA northbound APIs over an in-memory topology."""
