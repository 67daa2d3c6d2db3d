# The prog/python3 row of `cargo xtask bench`: N steps of dictionary, list and string work
# (run with PYTHONMALLOC=malloc so every object comes from the preloaded malloc), then a
# digest of the result, which every allocator must reproduce.
import hashlib
import sys

n = int(sys.argv[1])
d = {}
recent = []
x = 12345
for i in range(n):
    x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    k = "k%d" % (x % (n // 4 + 1))
    v = d.get(k)
    if v is None:
        d[k] = [i]
    else:
        v.append(i)
    recent.append(str(x) * (1 + x % 5))
    if len(recent) > 2000:
        del recent[:1000]
top = sorted(d.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:1000]
print(len(d), sum(map(len, recent)), hashlib.sha256(repr(top).encode()).hexdigest())
