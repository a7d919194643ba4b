"""One module per command group of the `integrity` CLI; each only parses, calls one
library function and hands the result to `ctx.obj.emit`."""
