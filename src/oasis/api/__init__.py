"""HTTP only: thin routes that parse, authorise, call a service and shape the reply."""
