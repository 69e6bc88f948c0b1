/* The benchmark models, shared by bench_nnlite.c: the seed workloads'
   architectures and training settings (../shared/SEEDS.md). */
#ifndef NNL_BENCH_MODELS_H
#define NNL_BENCH_MODELS_H

typedef struct {
    const char *name;                /* as on the command line */
    int rank;                        /* per-sample input rank */
    long long shape[3];              /* per-sample input shape */
    const char *layers[12];          /* NULL-terminated */
    const char *optimizer, *loss;
} bench_model;

static const bench_model bench_models[] = {
    {"kmlp", 2, {28, 28, 0},
     {"Flatten(input_shape=(28, 28))", "Dense(128, activation='relu')", "Dense(10, activation='softmax')", 0},
     "Adam(learning_rate=0.001)", "sparse_categorical_crossentropy"},
    {"rmlp", 1, {784, 0, 0},
     {"Dense(128, activation='relu', input_shape=(784,))", "Dense(128, activation='relu')",
      "Dense(10, activation='softmax')", 0},
     "SGD(learning_rate=0.01)", "sparse_categorical_crossentropy"},
    {"tlenet", 3, {28, 28, 1},
     {"Conv2D(20, 5, activation='tanh', input_shape=(28, 28, 1))", "MaxPooling2D(2)",
      "Conv2D(50, 5, activation='tanh')", "MaxPooling2D(2)", "Flatten()", "Dense(500, activation='tanh')",
      "Dense(10)", 0},
     "SGD(learning_rate=0.025)", "sparse_categorical_crossentropy(from_logits=True)"},
    {"kcnn", 3, {28, 28, 1},
     {"Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1))", "Conv2D(64, (3, 3), activation='relu')",
      "MaxPooling2D(2)", "Dropout(0.25)", "Flatten()", "Dense(128, activation='relu')", "Dropout(0.5)",
      "Dense(10, activation='softmax')", 0},
     "Adadelta(learning_rate=0.1)", "sparse_categorical_crossentropy"},
    {"rlenet", 3, {1, 28, 28},
     {"Conv2D(20, 5, padding='same', activation='relu', data_format='channels_first', input_shape=(1, 28, 28))",
      "MaxPooling2D(2, data_format='channels_first')",
      "Conv2D(50, 5, padding='same', activation='relu', data_format='channels_first')",
      "MaxPooling2D(2, data_format='channels_first')", "Flatten()", "Dense(500, activation='relu')",
      "Dense(10, activation='softmax')", 0},
     "Adam()", "sparse_categorical_crossentropy"},
};

#endif
