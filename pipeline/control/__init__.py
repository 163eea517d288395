"""Control: the degradation ladder, the controller that walks it, and every service's view of it."""
