#include <criterion/criterion.h>
Test(apply, placeholder) {}
