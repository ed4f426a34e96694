/* libmodbus's client through `coilwork gateway` (compiled by the test).
 *
 * usage: libmodbus_client PORT
 * For units 1 and 2: FC16 write + FC3 read back, FC6, FC15 + FC1, FC4, FC2,
 * FC23, FC22 (mask write) and FC17; prints one line per check and exits
 * non-zero on any failure. */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed = 0;

static void check(int ok, int unit, const char *what) {
    printf("%s unit %d %s\n", ok ? "ok  " : "FAIL", unit, what);
    if (!ok) failed++;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", atoi(argv[1]));
    if (ctx == NULL || modbus_connect(ctx) == -1) {
        printf("cannot connect: %s\n", modbus_strerror(errno));
        return 2;
    }
    modbus_set_response_timeout(ctx, 3, 0);
    for (int unit = 1; unit <= 2; unit++) {
        modbus_set_slave(ctx, unit);
        int base = 40 + unit * 10;
        uint16_t w[3] = {(uint16_t)(unit * 111), 2, 3}, r[3] = {0};
        check(modbus_write_registers(ctx, base, 3, w) == 3, unit, "fc16");
        check(modbus_read_registers(ctx, base, 3, r) == 3 && memcmp(w, r, sizeof w) == 0, unit, "fc03");
        check(modbus_write_register(ctx, base, 77) == 1, unit, "fc06");
        uint8_t bits[4] = {1, 0, 1, 1}, back[4] = {0};
        check(modbus_write_bits(ctx, base, 4, bits) == 4, unit, "fc15");
        check(modbus_read_bits(ctx, base, 4, back) == 4 && memcmp(bits, back, 4) == 0, unit, "fc01");
        check(modbus_read_input_registers(ctx, base, 2, r) == 2, unit, "fc04");
        check(modbus_read_input_bits(ctx, base, 2, back) == 2, unit, "fc02");
        uint16_t rw[2] = {5, 6};
        check(modbus_write_and_read_registers(ctx, base + 5, 2, rw, base, 1, r) == 1 && r[0] == 77, unit, "fc23");
        check(modbus_mask_write_register(ctx, base, 0x00F0, 0x0001) != -1, unit, "fc22");
        uint8_t id[64];
        check(modbus_report_slave_id(ctx, sizeof id, id) > 0, unit, "fc17");
    }
    modbus_close(ctx);
    modbus_free(ctx);
    printf("%d failed\n", failed);
    return failed ? 1 : 0;
}
