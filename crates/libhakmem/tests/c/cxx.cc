// C++ new/delete go through malloc/free under the preload: containers, strings, aligned new
// and a throwing allocation.
#include <cstdio>
#include <dlfcn.h>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

struct alignas(256) Wide {
    char b[300];
};

int main() {
    if (!dlsym(RTLD_DEFAULT, "hakmem_stat")) {
        std::fprintf(stderr, "hakmem is not active\n");
        return 1;
    }
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 20000; i++) m["key" + std::to_string(i % 997)].push_back(i);
    size_t total = 0;
    for (auto &kv : m) total += kv.second.size();
    auto w = std::make_unique<Wide[]>(10);
    bool aligned = (reinterpret_cast<uintptr_t>(w.get()) % 256) == 0;
    bool threw = false;
    try {
        // An explicit call: the compiler may elide a new-expression it can see freed.
        volatile size_t huge = static_cast<size_t>(-1) / 4;
        void *p = ::operator new[](huge);
        ::operator delete[](p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    if (total != 20000 || !aligned || !threw) {
        std::fprintf(stderr, "total %zu aligned %d threw %d\n", total, aligned, threw);
        return 1;
    }
    std::printf("cxx: ok\n");
    return 0;
}
