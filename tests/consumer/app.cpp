// The C++ wrapper from an installed nnlite (make test's consumers check).
#include <cstdio>

#include "nnlite.hpp"

int main() {
    try {
        nnlite::Model m;
        m.set_seed(1).add("Dense(8, activation='tanh', input_shape=(2,))").add("Dense(1, activation='sigmoid')");
        m.compile("Adam(learning_rate=0.05)", "binary_crossentropy", "accuracy");
        nnlite::FitOptions o;
        o.epochs = 500;
        o.batch_size = 4;
        o.verbose = 0;
        std::vector<float> x = {0, 0, 0, 1, 1, 0, 1, 1}, y = {0, 1, 1, 0};
        m.fit(x, {4, 2}, y, {4, 1}, o);
        std::vector<float> p = m.predict(x, {4, 2});
        bool ok = true;
        for (int i = 0; i < 4; i++) ok = ok && ((p[i] > 0.5f) == (y[i] > 0.5f));
        std::printf("consumer C++: XOR %s\n", ok ? "learned" : "NOT learned");
        return ok ? 0 : 1;
    } catch (const nnlite::Error &e) {
        std::fprintf(stderr, "consumer C++: %s\n", e.what());
        return 1;
    }
}
