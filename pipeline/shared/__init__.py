"""What every stage shares: settings, records, files, devices, processes, errors and the measures two stages use."""
