// zlib's CRC-32 (polynomial 0xEDB88320, reflected) for the snapshot file and the migration stream
// (docs/snapshot.md), slice-by-8: eight table lookups per 8 bytes. In C because a Swift debug build (as the
// test suites and the nested tier run) checksums about 100 times slower, which made a live migration of a
// Linux guest's 25 MiB take 100 s in the nested tier. The tables are built once, on first use.
#include "CKvm.h"
#include <pthread.h>
#include <string.h>

static uint32_t tables[8][256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        tables[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        for (int t = 1; t < 8; t++) tables[t][n] = tables[0][tables[t - 1][n] & 0xFF] ^ (tables[t - 1][n] >> 8);
    }
}

uint32_t ckvm_crc32(uint32_t crc, const void *buffer, size_t length) {
    pthread_once(&once, build_tables);
    const uint8_t *p = buffer;
    uint32_t c = ~crc;
    while (length >= 8) {
        uint32_t low, high;
        memcpy(&low, p, 4);  // little-endian host (x86-64 only)
        memcpy(&high, p + 4, 4);
        low ^= c;
        c = tables[7][low & 0xFF] ^ tables[6][(low >> 8) & 0xFF] ^ tables[5][(low >> 16) & 0xFF] ^ tables[4][low >> 24]
            ^ tables[3][high & 0xFF] ^ tables[2][(high >> 8) & 0xFF] ^ tables[1][(high >> 16) & 0xFF] ^ tables[0][high >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = tables[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}
