#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Allocates and touches 1 GiB, far above the run's limit. */
int main(void) {
    for (int i = 0; i < 1024; i++) {
        char* p = malloc(1 << 20);
        if (!p) return 1;
        memset(p, 'x', 1 << 20);
    }
    puts("allocated 1 GiB");
    return 0;
}
