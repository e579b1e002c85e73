#include <criterion/criterion.h>
Test(manifest, placeholder) {}
