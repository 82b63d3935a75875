"""The configuration at the door: the typed settings of every config group, their checks (types, ranges,
unknown keys, each a one-line error) and the command-line conventions of the entry points. Library code
takes the typed settings; only the entry points see Hydra's config."""
