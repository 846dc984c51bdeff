#include <stdio.h>

int main(void) {
    char name[64] = "world";
    if (scanf("%63s", name) != 1) return 1;
    printf("hello, %s, from C (gcc %d.%d)\n", name, __GNUC__, __GNUC_MINOR__);
    return 0;
}
