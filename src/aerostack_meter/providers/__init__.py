"""Provider modules: which SDK methods to wrap and where usage lives. Imported lazily."""
