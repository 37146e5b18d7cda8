"""One module per wire format: its mapping to and from the neutral conversation model
(`mitmllm.protocol.conversation`). A dialect finds its converter with `Dialect.converter()`.

The converters sit next to the dialect modules rather than inside them: a dialect module reads
like the spec of its stream grammar (states, rules, rewrites), a converter like a table of what
each field means in neutral terms; both are long, they change for different reasons, and a
format can be recognised and validated before anyone maps it.
"""
