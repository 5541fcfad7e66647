"""Ways events get into touchstream from outside: files, data sets, simulators."""
